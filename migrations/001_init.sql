-- Users and the durable message history. Names are unique regardless of case
-- (Alice = alice); the api checks the name rules before inserting.
CREATE TABLE users (
  id bigserial PRIMARY KEY,
  name text NOT NULL,
  password_hash text NOT NULL,
  status text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
  last_seen timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_name_lower_key ON users (lower(name));

-- Filled by the syncer from the per-shard Redis streams. (room, seq) is the
-- order every client saw; (room, sender, id) makes a re-delivered message the
-- same row.
CREATE TABLE messages (
  room text NOT NULL,
  seq bigint NOT NULL CHECK (seq > 0),
  id text NOT NULL,
  sender text NOT NULL,
  body text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (room, seq),
  UNIQUE (room, sender, id)
);
