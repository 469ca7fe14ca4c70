-- Flow 4 (the syncer) and seq durability.
--
-- One row per room that has a message in PostgreSQL, upserted by the syncer
-- in the transaction that inserts the messages: history knows where
-- PostgreSQL ends without scanning, and GET /rooms pages through it by name.
CREATE TABLE rooms (
  room text PRIMARY KEY,
  last_seq bigint NOT NULL CHECK (last_seq > 0),
  message_count bigint NOT NULL CHECK (message_count > 0),
  last_ts timestamptz NOT NULL
);

-- The durable guard of a room's seq: every seq a sequencer ever gave out in
-- the room is <= reserved. A sequencer advances it by a block before it uses
-- the block, so a Redis that lost writes (an older AOF, a promoted replica)
-- continues above it and never gives a seq twice.
CREATE TABLE room_seq_reservations (
  room text PRIMARY KEY,
  reserved bigint NOT NULL CHECK (reserved > 0)
);
