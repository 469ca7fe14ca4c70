#!/usr/bin/env bash
# Starts/stops Redis, RabbitMQ and PostgreSQL 15 as plain local processes on
# 127.0.0.1, with every byte of state (data, logs, pids, config, Erlang cookie,
# passwords) under one folder. Several folders can run side by side on
# different ports.
#
#   scripts/services.sh start|stop|status|env|wipe|restart-rabbitmq|stop-postgres|start-postgres DIR
#
# Ports come from REDIS_PORT, AMQP_PORT, PG_PORT (defaults: the local stack,
# 6380/5673/5433) and are remembered in DIR/ports for stop/status.
# RabbitMQ's distribution port is AMQP_PORT+20000.
# REDIS_MAXMEMORY caps Redis (default 1gb; any redis.conf size such as 512mb);
# Redis never evicts (noeviction): a full Redis refuses writes instead.
# REDIS_APPENDFSYNC is Redis' AOF fsync policy (default always: a script's
# reply, and so the sequencer's ack of the message, waits for its fsync; see
# docs/operations.md for why and what it costs; everysec or no to compare).
# RTMC_SERVICES_EPHEMERAL=1 trades durability for speed (tests): no Redis AOF,
# PostgreSQL without fsync.
# SERVICES_TIMEOUT_S bounds each readiness wait (default 120 s).
#
# Credentials: on the first start of a folder, random passwords are written
# to DIR/secrets/ (mode 700, files 600): Redis ACL user `rtmc` (the default
# user has a random password given to nobody), RabbitMQ user `rtmc` (no `guest`), PostgreSQL role `rtmc` (no
# superuser; owns database rtmc) and the cluster's superuser `postgres`, all
# with password authentication (scram-sha-256). The full client values are
# kept there too, for the servers' *_FILE variables: redis.url, amqp.url,
# pg.conninfo. A folder whose services were created before it had secrets
# is refused (wipe it).
#
# Contract with callers:
# - `start` returns 0 only when every service answers with its credentials
#   (redis PING as rtmc, an AMQP handshake plus `rabbitmqctl await_startup`
#   and `authenticate_user rtmc`, pg_isready + a login as rtmc to database
#   rtmc), then writes DIR/env (mode 600) with export lines for RTMC_REDIS,
#   RTMC_AMQP, RTMC_PG (credentials included) and the same values as
#   RTMC_TEST_*, plus RTMC_TEST_AMQP_RESTART (the restart-rabbitmq command
#   line for DIR, used by amqp_itest), RTMC_TEST_PG_STOP and
#   RTMC_TEST_PG_START (the stop-postgres / start-postgres command lines for
#   DIR, used by syncer_itest).
# - `stop-postgres` stops the folder's PostgreSQL (fast shutdown) and returns
#   once it is gone; `start-postgres` starts it again and returns 0 only once
#   it accepts the application role: an outage as clients see it.
# - `restart-rabbitmq` simulates a broker crash: SIGKILL to the folder's
#   Erlang VM (its recorded PID / the wrapper's beam.smp children, nothing
#   else), waits until the AMQP port is closed, then starts it again like
#   `start` and returns 0 only once it is ready.
# - `start` on a running folder is harmless; `stop` on a stopped one too.
# - Only processes whose PIDs were recorded in DIR/pids (and whose command name
#   still matches, against PID reuse) are ever signalled. epmd is stopped only
#   if this folder started it and no Erlang node is still registered with it.
set -euo pipefail

log_tag=services
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: [REDIS_PORT=..] [AMQP_PORT=..] [PG_PORT=..] [REDIS_MAXMEMORY=1gb] [REDIS_APPENDFSYNC=always] $0 start|stop|status|env|wipe|restart-rabbitmq|stop-postgres|start-postgres DIR" >&2
  exit 2
}

[[ $# -eq 2 ]] || usage
action=$1
dir=$(realpath -m -- "$2")
script_path=$(realpath -- "${BASH_SOURCE[0]}")

REDIS_PORT=${REDIS_PORT:-6380}
AMQP_PORT=${AMQP_PORT:-5673}
PG_PORT=${PG_PORT:-5433}
# The ports a folder was started with are kept in DIR/ports: stop and status
# always act on those, and so does start while anything of it still runs.
if [[ -f $dir/ports ]] && { [[ $action != start ]] || compgen -G "$dir/pids/*" >/dev/null; }; then
  requested="$REDIS_PORT $AMQP_PORT $PG_PORT"
  # shellcheck source=/dev/null
  . "$dir/ports"
  if [[ $action == start && $requested != "$REDIS_PORT $AMQP_PORT $PG_PORT" ]]; then
    log "note: $dir already runs on ports $REDIS_PORT $AMQP_PORT $PG_PORT; keeping those"
  fi
fi
REDIS_MAXMEMORY=${REDIS_MAXMEMORY:-1gb}
REDIS_APPENDFSYNC=${REDIS_APPENDFSYNC:-always}
case $REDIS_APPENDFSYNC in
  always | everysec | no) ;;
  *) die "REDIS_APPENDFSYNC must be always, everysec or no (got '$REDIS_APPENDFSYNC')" ;;
esac
DIST_PORT=$((AMQP_PORT + 20000))
TIMEOUT_S=${SERVICES_TIMEOUT_S:-120}
EPHEMERAL=${RTMC_SERVICES_EPHEMERAL:-0}

PG_BIN=/usr/lib/postgresql/15/bin
RABBIT_BIN=/usr/lib/rabbitmq/bin
# The node name carries the port: two folders can never both hold one port,
# so two live nodes never share a name.
RABBIT_NODE="rtmc-${AMQP_PORT}@localhost"

# The one application user of every service.
APP_USER=rtmc

pids_dir=$dir/pids
secrets_dir=$dir/secrets
logs_dir=$dir/logs
redis_dir=$dir/redis
rabbit_dir=$dir/rabbitmq
# PostgreSQL's folder is DIR/pg, or (as root, when user postgres cannot enter
# DIR, e.g. under /root) a symlink to a folder in postgres' home; see
# place_pg_dir. Its log lives inside it, as postgres must write it.
pg_dir=$dir/pg
[[ -L $pg_dir ]] && pg_dir=$(readlink -f -- "$pg_dir")
pg_data=$pg_dir/data
pg_log=$pg_dir/postgres.log

# ---------------------------------------------------------------- processes

# Expected command name (/proc/PID/comm) of each tracked process.
expected_comm() {
  case $1 in
    redis) echo redis-server ;;
    rabbitmq) echo rabbitmq-server ;;  # the sh wrapper that proxies signals to beam
    rabbitmq-beam) echo beam.smp ;;
    postgres) echo postgres ;;
    epmd) echo epmd ;;
    *) die "unknown service $1" ;;
  esac
}

# Prints the recorded PID of $1 if that process is alive and still is what we
# started (PID reuse guard); fails otherwise.
tracked_pid() { live_pid "$pids_dir/$1" "$(expected_comm "$1")"; }

# Like tracked_pid, but for a process spawn() has just started: until it has
# exec'd its program, its /proc/PID/comm still names the subshell, setsid or
# env in between (a window a loaded machine makes long).
spawned_alive() {
  local pid comm
  pid=$(cat "$pids_dir/$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  case $comm in
    "$(expected_comm "$1")" | bash | setsid | env) ;;
    *) return 1 ;;
  esac
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

# Runs "$@" detached in its own session so a Ctrl-C or a closing terminal of
# the caller does not reach the service; records its PID as $name.
spawn() {
  local name=$1 out=$2
  shift 2
  setsid "$@" </dev/null >>"$out" 2>&1 &
  echo $! >"$pids_dir/$name"
}

# Sends SIGTERM (then SIGKILL after a grace period) to a tracked process.
terminate() { stop_pid_file "$pids_dir/$1" "$(expected_comm "$1")" "${2:-30}"; }

as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# ------------------------------------------------------------------- redis

# redis-cli as the application user; the password travels in the
# environment (REDISCLI_AUTH), never on a command line.
redis_cli() {
  REDISCLI_AUTH=$(secret redis) redis-cli --no-auth-warning --user "$APP_USER" \
    -h 127.0.0.1 -p "$REDIS_PORT" "$@"
}

redis_ping() { [[ $(redis_cli ping 2>/dev/null) == PONG ]]; }

# The whole configuration in one file (mode 600, as it holds the password);
# rewritten on every start from DIR/secrets.
write_redis_conf() {
  local aof=yes
  [[ $EPHEMERAL == 1 ]] && aof=no
  (umask 077 && cat >"$redis_dir/redis.conf.tmp") <<EOF
port $REDIS_PORT
bind 127.0.0.1
protected-mode yes
daemonize no
dir "$redis_dir"
logfile ""
save ""
appendonly $aof
# always: Redis writes and fsyncs the AOF once per event-loop turn, before it
# sends the replies of that turn, so every script the sequencer saw succeed
# (and acked the ingest message for) survives a machine crash.
appendfsync $REDIS_APPENDFSYNC
# Memory pressure must be an error the sequencer retries: an evicted seq
# counter or dedupe key would silently break ordering or deduplication.
maxmemory $REDIS_MAXMEMORY
maxmemory-policy noeviction
# No anonymous access: the application has its own user, and the default
# user has a random password given to nobody (a new one at every start). It
# must stay *on*: Redis replays the AOF as the default user, and with that
# user off every MULTI/EXEC block in the AOF -- the effects of every Lua
# script: seq counters, room logs, dedupe keys, presence -- is refused while
# loading ("NOPERM ACLs rules changed...") and silently lost on restart
# (redis/redis#14541, valkey-io/valkey#3983).
user default on >$(random_password) ~* &* +@all
user $APP_USER on >$(secret redis) ~* &* +@all
EOF
  mv -f "$redis_dir/redis.conf.tmp" "$redis_dir/redis.conf"
}

start_redis() {
  if tracked_pid redis >/dev/null; then
    log "redis already running (pid $(<"$pids_dir/redis"))"
    return 0
  fi
  port_open 127.0.0.1 "$REDIS_PORT" && die "port $REDIS_PORT (redis) is taken by a process not started from $dir"
  mkdir -p "$redis_dir"
  write_redis_conf
  spawn redis "$logs_dir/redis.log" redis-server "$redis_dir/redis.conf"
}

wait_redis() {
  local start
  start=$(now_s)
  until redis_ping; do
    spawned_alive redis || die "redis exited during start-up; log: $logs_dir/redis.log"
    (($(date +%s) - ${start%.*} >= TIMEOUT_S)) &&
      die "redis did not answer PING (as user $APP_USER) on 127.0.0.1:$REDIS_PORT within ${TIMEOUT_S}s; log: $logs_dir/redis.log"
    sleep 0.1
  done
  log "redis ready on 127.0.0.1:$REDIS_PORT, maxmemory $REDIS_MAXMEMORY noeviction ($(seconds_since "$start")s)"
}

stop_redis() {
  local pid
  if pid=$(tracked_pid redis); then
    # SHUTDOWN flushes the AOF; a dead connection afterwards is the success case.
    redis_cli shutdown >/dev/null 2>&1 || true
    wait_gone "$pid" 20 || true
  fi
  terminate redis 10
}

# ---------------------------------------------------------------- rabbitmq

# Everything RabbitMQ and its CLI read lives in the folder; the CLI needs the
# same HOME (Erlang cookie) and node name as the server.
rabbit_env=(
  HOME="$rabbit_dir/home"
  RABBITMQ_NODENAME="$RABBIT_NODE"
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  RABBITMQ_NODE_PORT="$AMQP_PORT"
  RABBITMQ_DIST_PORT="$DIST_PORT"
  RABBITMQ_MNESIA_BASE="$rabbit_dir/mnesia"
  RABBITMQ_LOG_BASE="$logs_dir/rabbitmq"
  RABBITMQ_CONFIG_FILE="$rabbit_dir/rabbitmq.conf"
  RABBITMQ_ADVANCED_CONFIG_FILE="$rabbit_dir/advanced.config"
  RABBITMQ_CONF_ENV_FILE="$rabbit_dir/rabbitmq-env.conf"
  RABBITMQ_ENABLED_PLUGINS_FILE="$rabbit_dir/enabled_plugins"
  RABBITMQ_PID_FILE="$rabbit_dir/rabbitmq.pid"
  # Unbound schedulers that do not busy-wait: on a small shared machine the
  # broker must not spin on cores our own servers and compilers need.
  RABBITMQ_SCHEDULER_BIND_TYPE=u
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none"
  ERL_EPMD_ADDRESS=127.0.0.1
)

rabbitmqctl_() { env "${rabbit_env[@]}" "$RABBIT_BIN/rabbitmqctl" -n "$RABBIT_NODE" "$@"; }

epmd_running() { epmd -names >/dev/null 2>&1; }

# epmd is one per machine (port 4369) and shared by every Erlang node. If none
# runs, start one ourselves so its PID is known and it can be stopped later.
ensure_epmd() {
  epmd_running && return 0
  spawn epmd "$logs_dir/epmd.log" epmd -address 127.0.0.1
  local _
  for _ in $(seq 50); do
    epmd_running && break
    sleep 0.1
  done
  # Lost a race with another starter: theirs serves us, forget ours.
  tracked_pid epmd >/dev/null || rm -f "$pids_dir/epmd"
  epmd_running || die "epmd did not start; log: $logs_dir/epmd.log"
}

# A complete AMQP 0-9-1 protocol header must be answered with a method frame
# (Connection.Start, frame type 1): the broker is accepting clients.
amqp_answers() {
  # shellcheck disable=SC2016  # the inner script expands its own variables
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "AMQP\x00\x00\x09\x01" >&3
    IFS= read -r -t 4 -N 1 frame_type <&3 || exit 1
    [[ $frame_type == $'"'"'\x01'"'"' ]]' _ "$1" 2>/dev/null
}

start_rabbitmq() {
  if tracked_pid rabbitmq >/dev/null; then
    log "rabbitmq already running (pid $(<"$pids_dir/rabbitmq"))"
    return 0
  fi
  port_open 127.0.0.1 "$AMQP_PORT" && die "port $AMQP_PORT (amqp) is taken by a process not started from $dir"
  port_open 127.0.0.1 "$DIST_PORT" && die "port $DIST_PORT (rabbitmq distribution = amqp+20000) is taken"
  mkdir -p "$rabbit_dir/home" "$rabbit_dir/mnesia" "$logs_dir/rabbitmq"
  # No plugins: the management plugin would open port 15672 on every node.
  echo '[].' >"$rabbit_dir/enabled_plugins"
  # default_user replaces `guest` when the node first initialises its
  # database (an empty mnesia folder): guest never exists. Mode 600: it
  # holds the password.
  (umask 077 && cat >"$rabbit_dir/rabbitmq.conf.tmp") <<EOF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
default_vhost = /
default_user = $APP_USER
default_pass = $(secret amqp)
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
log.console = false
log.file.level = info
disk_free_limit.absolute = 50MB
EOF
  mv -f "$rabbit_dir/rabbitmq.conf.tmp" "$rabbit_dir/rabbitmq.conf"
  : >"$rabbit_dir/rabbitmq-env.conf"
  ensure_epmd
  spawn rabbitmq "$logs_dir/rabbitmq.out" env "${rabbit_env[@]}" "$RABBIT_BIN/rabbitmq-server"
}

wait_rabbitmq() {
  local start
  start=$(now_s)
  until amqp_answers "$AMQP_PORT"; do
    spawned_alive rabbitmq ||
      die "rabbitmq exited during start-up; logs: $logs_dir/rabbitmq.out, $logs_dir/rabbitmq/"
    (($(date +%s) - ${start%.*} >= TIMEOUT_S)) &&
      die "rabbitmq did not answer AMQP on 127.0.0.1:$AMQP_PORT within ${TIMEOUT_S}s; logs: $logs_dir/rabbitmq.out, $logs_dir/rabbitmq/"
    sleep 0.3
  done
  # The listener opens late in boot; await_startup confirms the app is fully up.
  rabbitmqctl_ -q await_startup --timeout "$TIMEOUT_S" >>"$logs_dir/rabbitmqctl.log" 2>&1 ||
    die "rabbitmqctl await_startup failed for $RABBIT_NODE; logs: $logs_dir/rabbitmqctl.log, $logs_dir/rabbitmq/"
  # The application's credentials work (the password on stdin, not in ps).
  secret amqp | rabbitmqctl_ -q authenticate_user "$APP_USER" >>"$logs_dir/rabbitmqctl.log" 2>&1 ||
    die "rabbitmq of $dir refuses user $APP_USER with the password in $secrets_dir/amqp.password; logs: $logs_dir/rabbitmqctl.log"
  # Track the VM too: should the wrapper die, stop can still reach it.
  if [[ -s $rabbit_dir/rabbitmq.pid ]]; then
    cp "$rabbit_dir/rabbitmq.pid" "$pids_dir/rabbitmq-beam"
  fi
  log "rabbitmq ready on 127.0.0.1:$AMQP_PORT, node $RABBIT_NODE ($(seconds_since "$start")s)"
}

stop_rabbitmq() {
  # The wrapper turns SIGTERM into a clean VM shutdown and waits for it (as
  # clean as `rabbitmqctl stop`, without starting the CLI's own VM). The VM is
  # signalled directly only if the wrapper is gone or it outlives it.
  terminate rabbitmq 60
  terminate rabbitmq-beam 30
  rm -f "$rabbit_dir/rabbitmq.pid"
  stop_epmd_if_ours
}

# The folder's Erlang VM(s): the PID RabbitMQ recorded once it was up, and
# any beam.smp child of our wrapper (which exists before that PID is known).
rabbitmq_vm_pids() {
  local pid wrapper child
  if pid=$(tracked_pid rabbitmq-beam); then
    echo "$pid"
  fi
  if wrapper=$(tracked_pid rabbitmq); then
    for child in $(pgrep -P "$wrapper" 2>/dev/null || true); do
      [[ $(cat "/proc/$child/comm" 2>/dev/null) == beam.smp ]] && echo "$child"
    done
  fi
  return 0
}

# A crash, not a shutdown: nothing is flushed or handed over cleanly.
crash_rabbitmq() {
  local vms wrapper pid helpers=() start
  vms=$(rabbitmq_vm_pids | sort -u)
  [[ -n $vms ]] || die "rabbitmq of $dir is not running (no recorded VM PID); start it first"
  wrapper=$(tracked_pid rabbitmq) || wrapper=
  for pid in $vms; do
    # erl_child_setup and port programs: they exit with the VM, and are
    # waited for so the restarted node finds nothing of the old one.
    mapfile -t -O "${#helpers[@]}" helpers < <(pgrep -P "$pid" 2>/dev/null || true)
  done
  log "kill -9 rabbitmq VM of $dir: pid(s) ${vms//$'\n'/ }"
  for pid in $vms; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in $vms; do wait_gone "$pid" 20 || die "rabbitmq VM $pid survived SIGKILL"; done
  # The wrapper only waits for its VM; it exits with it.
  if [[ -n $wrapper ]] && ! wait_gone "$wrapper" 10; then
    log "rabbitmq wrapper (pid $wrapper) outlived its VM; sending SIGKILL"
    kill -KILL "$wrapper" 2>/dev/null || true
    wait_gone "$wrapper" 5 || true
  fi
  for pid in "${helpers[@]}"; do wait_gone "$pid" 10 || true; done
  rm -f "$pids_dir/rabbitmq" "$pids_dir/rabbitmq-beam" "$rabbit_dir/rabbitmq.pid"
  start=$(date +%s)
  # Closed ports and no epmd registration left: a node of the same name may start.
  while port_open 127.0.0.1 "$AMQP_PORT" || port_open 127.0.0.1 "$DIST_PORT" ||
    epmd -names 2>/dev/null | grep -q "^name ${RABBIT_NODE%@*} "; do
    (($(date +%s) - start >= TIMEOUT_S)) &&
      die "port $AMQP_PORT/$DIST_PORT or epmd name ${RABBIT_NODE%@*} still taken ${TIMEOUT_S}s after the kill"
    sleep 0.1
  done
  log "rabbitmq of $dir is down; AMQP port $AMQP_PORT closed"
}

stop_epmd_if_ours() {
  tracked_pid epmd >/dev/null || { rm -f "$pids_dir/epmd"; return 0; }
  # Another folder's node may be registered with our epmd: leave it running
  # for them (it is harmless); their stop will find it untracked.
  if epmd -names 2>/dev/null | grep -q '^name '; then
    log "epmd (pid $(<"$pids_dir/epmd")) still serves other Erlang nodes; leaving it running"
    return 0
  fi
  terminate epmd 5
}

# -------------------------------------------------------------- postgresql

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; }

# psql as the cluster's superuser (set-up only) and as the application role;
# passwords in the environment (PGPASSWORD), never on a command line.
pg_admin() {
  PGPASSWORD=$(secret pg-superuser) "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" \
    -U postgres -d postgres "$@"
}
pg_app() {
  PGPASSWORD=$(secret pg) "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" \
    -U "$APP_USER" -d rtmc "$@"
}

# As root, PostgreSQL runs as user postgres, which must be able to enter DIR.
# When it cannot (a parent such as /root is private), the cluster lives in
# postgres' home instead, one folder per DIR, linked from DIR/pg. A DIR
# without that link is a fresh one: whatever its old folder held is dropped.
place_pg_dir() {
  [[ -e $dir/pg || -L $dir/pg ]] && return 0
  as_postgres test -x "$dir" && return 0
  local home
  home=$(getent passwd postgres | cut -d: -f6)
  [[ -n $home && -d $home ]] || die "user postgres cannot enter $dir and has no home folder to use instead"
  pg_dir=$home/rtmc-clusters/$(printf '%s' "$dir" | sha1sum | cut -c1-16)
  rm -rf "$pg_dir"
  mkdir -p "$pg_dir"
  chown postgres: "$home/rtmc-clusters" "$pg_dir"
  ln -s "$pg_dir" "$dir/pg"
  pg_data=$pg_dir/data
  pg_log=$pg_dir/postgres.log
  log "user postgres cannot enter $dir: PostgreSQL data in $pg_dir (linked from $dir/pg)"
}

# pg_ctl learns the postmaster's PID only once it is up; if the caller was
# interrupted before we recorded it, the server's own pid file still names it.
adopt_postmaster() {
  [[ -f $pids_dir/postgres ]] && return 0
  [[ -r $pg_data/postmaster.pid ]] || return 0
  head -n1 "$pg_data/postmaster.pid" >"$pids_dir/postgres"
  tracked_pid postgres >/dev/null || rm -f "$pids_dir/postgres"
}

start_postgres() {
  adopt_postmaster
  if tracked_pid postgres >/dev/null; then
    log "postgres already running (pid $(<"$pids_dir/postgres"))"
    return 0
  fi
  port_open 127.0.0.1 "$PG_PORT" && die "port $PG_PORT (postgres) is taken by a process not started from $dir"
  [[ -x $PG_BIN/pg_ctl ]] || die "PostgreSQL 15 not installed ($PG_BIN/pg_ctl); run scripts/install-deps.sh"
  [[ $(id -u) -eq 0 ]] && place_pg_dir
  mkdir -p "$pg_data"
  chmod 700 "$pg_data"
  touch "$pg_log"
  ln -sfn "$pg_log" "$logs_dir/postgres.log"
  if [[ $(id -u) -eq 0 ]]; then
    # PostgreSQL refuses to run as root: the data belongs to the postgres user.
    chown -R postgres: "$pg_dir"
    as_postgres test -w "$pg_data" || die "user postgres cannot write $pg_data"
  fi
  if [[ ! -f $pg_data/PG_VERSION ]]; then
    # The superuser's password reaches initdb in a file of the postgres
    # user's own (it cannot read DIR/secrets), deleted right after.
    local pwfile=$pg_dir/initdb-password
    write_private "$pwfile" "$(secret pg-superuser)"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$pwfile"
    as_postgres "$PG_BIN/initdb" -D "$pg_data" -U postgres --pwfile="$pwfile" -A scram-sha-256 \
      -E UTF8 --locale=C --no-sync >>"$pg_log" 2>&1 || { rm -f "$pwfile"; die "initdb failed; log: $pg_log"; }
    rm -f "$pwfile"
    # Password logins over TCP from 127.0.0.1 only; nothing else is accepted.
    printf '%s\n' '# TYPE  DATABASE  USER  ADDRESS       METHOD' \
      'host    all       all   127.0.0.1/32  scram-sha-256' |
      as_postgres tee "$pg_data/pg_hba.conf" >/dev/null
    # No Unix socket: clients use TCP on 127.0.0.1 and nothing lands outside DIR.
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "unix_socket_directories = ''"
      echo "password_encryption = 'scram-sha-256'"
      if [[ $EPHEMERAL == 1 ]]; then
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
      fi
    } | as_postgres tee -a "$pg_data/postgresql.conf" >/dev/null
  fi
  # pg_ctl puts the postmaster in its own session and returns once it is ready.
  # shellcheck disable=SC2094  # pg_ctl and its server append to one log
  as_postgres "$PG_BIN/pg_ctl" -D "$pg_data" -l "$pg_log" -o "-p $PG_PORT" \
    -w -t "$TIMEOUT_S" start >>"$pg_log" 2>&1 ||
    die "pg_ctl start failed; log: $pg_log"
  head -n1 "$pg_data/postmaster.pid" >"$pids_dir/postgres"
}

wait_postgres() {
  local start
  start=$(now_s)
  until pg_ready; do
    tracked_pid postgres >/dev/null || die "postgres exited during start-up; log: $pg_log"
    (($(date +%s) - ${start%.*} >= TIMEOUT_S)) &&
      die "postgres did not answer on 127.0.0.1:$PG_PORT within ${TIMEOUT_S}s; log: $pg_log"
    sleep 0.2
  done
  # The application role: no superuser, no role or database creation; it
  # owns database rtmc, so the migrations it runs may create tables there.
  if [[ -z $(pg_admin -tAc "select 1 from pg_roles where rolname = '$APP_USER'") ]]; then
    # The statement, password included, goes over stdin, not the command line.
    pg_admin <<<"CREATE ROLE $APP_USER LOGIN PASSWORD '$(secret pg)' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;" ||
      die "creating role $APP_USER failed on 127.0.0.1:$PG_PORT; log: $pg_log"
  fi
  if [[ -z $(pg_admin -tAc "select 1 from pg_database where datname = 'rtmc'") ]]; then
    pg_admin -c "CREATE DATABASE rtmc OWNER $APP_USER" ||
      die "creating database rtmc failed on 127.0.0.1:$PG_PORT; log: $pg_log"
  fi
  [[ $(pg_app -tAc "select current_user") == "$APP_USER" ]] ||
    die "postgres refuses $APP_USER with the password in $secrets_dir/pg.password; log: $pg_log"
  log "postgres ready on 127.0.0.1:$PG_PORT, database rtmc, role $APP_USER ($(seconds_since "$start")s)"
}

stop_postgres() {
  local pid
  adopt_postmaster
  if pid=$(tracked_pid postgres); then
    as_postgres "$PG_BIN/pg_ctl" -D "$pg_data" -m fast -w -t 60 stop >>"$pg_log" 2>&1 || true
    wait_gone "$pid" 10 || true
  fi
  terminate postgres 20
}

# ---------------------------------------------------------------- secrets

# The stored password $1 (redis, amqp, pg, pg-superuser); empty if none.
secret() { cat "$secrets_dir/$1.password" 2>/dev/null || true; }

# Creates the folder's passwords once; they then live as long as its data.
ensure_secrets() {
  if [[ ! -d $secrets_dir ]]; then
    local old
    for old in "$redis_dir" "$rabbit_dir/mnesia" "$dir/pg"; do
      [[ -e $old || -L $old ]] &&
        die "$dir holds service data from before the services required passwords ($old). Stop what uses it, then delete it: scripts/services.sh wipe $dir (its data is lost)"
    done
  fi
  mkdir -p "$secrets_dir"
  chmod 700 "$secrets_dir"
  local name
  for name in redis amqp pg pg-superuser; do
    [[ -s $secrets_dir/$name.password ]] || write_private "$secrets_dir/$name.password" "$(random_password)"
  done
}

# -------------------------------------------------------------------- env

# Plain hex passwords need no escaping in a URL or a libpq string.
redis_url() { echo "redis://$APP_USER:$(secret redis)@127.0.0.1:$REDIS_PORT"; }
amqp_url() { echo "amqp://$APP_USER:$(secret amqp)@127.0.0.1:$AMQP_PORT/"; }
pg_conninfo() { echo "host=127.0.0.1 port=$PG_PORT dbname=rtmc user=$APP_USER password=$(secret pg)"; }

# DIR/env for shells and tests, and one file per value for the servers'
# RTMC_*_FILE variables; all mode 600.
write_env() {
  [[ -s $secrets_dir/redis.password ]] || die "$dir has no passwords yet; run start first"
  write_private "$secrets_dir/redis.url" "$(redis_url)"
  write_private "$secrets_dir/amqp.url" "$(amqp_url)"
  write_private "$secrets_dir/pg.conninfo" "$(pg_conninfo)"
  local tmp=$dir/env.tmp
  (umask 077 && : >"$tmp")
  {
    echo "# written by scripts/services.sh for $dir"
    local prefix
    for prefix in RTMC RTMC_TEST; do
      printf 'export %s_REDIS="%s"\n' "$prefix" "$(redis_url)"
      printf 'export %s_AMQP="%s"\n' "$prefix" "$(amqp_url)"
      printf 'export %s_PG="%s"\n' "$prefix" "$(pg_conninfo)"
    done
    printf 'export RTMC_TEST_AMQP_RESTART="bash '"'"'%s'"'"' restart-rabbitmq '"'"'%s'"'"'"\n' "$script_path" "$dir"
    printf 'export RTMC_TEST_PG_STOP="bash '"'"'%s'"'"' stop-postgres '"'"'%s'"'"'"\n' "$script_path" "$dir"
    printf 'export RTMC_TEST_PG_START="bash '"'"'%s'"'"' start-postgres '"'"'%s'"'"'"\n' "$script_path" "$dir"
  } >"$tmp"
  mv "$tmp" "$dir/env"
}

# ----------------------------------------------------------------- actions

cmd_start() {
  local start
  start=$(now_s)
  mkdir -p "$pids_dir" "$logs_dir"
  ensure_secrets
  printf 'REDIS_PORT=%s\nAMQP_PORT=%s\nPG_PORT=%s\n' "$REDIS_PORT" "$AMQP_PORT" "$PG_PORT" >"$dir/ports"
  # The folder must be enterable by the postgres user when we run as root.
  [[ $(id -u) -eq 0 ]] && chmod o+x "$dir"
  # RabbitMQ boots slowest: launch it first and let the others start meanwhile.
  start_rabbitmq
  start_redis
  start_postgres
  wait_redis
  wait_postgres
  wait_rabbitmq
  write_env
  log "all services up in $(seconds_since "$start")s; env: $dir/env; logs: $logs_dir"
}

cmd_stop() {
  [[ -d $pids_dir ]] || { log "nothing started in $dir"; return 0; }
  # Each stop runs even if an earlier one failed.
  local rc=0
  stop_rabbitmq || rc=1
  stop_redis || rc=1
  stop_postgres || rc=1
  log "stopped services of $dir"
  return $rc
}

cmd_restart_rabbitmq() {
  local start
  start=$(now_s)
  [[ -f $dir/ports ]] || die "$dir was never started (no $dir/ports)"
  crash_rabbitmq
  start_rabbitmq
  wait_rabbitmq
  log "rabbitmq of $dir restarted in $(seconds_since "$start")s"
}

cmd_stop_postgres() {
  [[ -f $dir/ports ]] || die "$dir was never started (no $dir/ports)"
  stop_postgres
  log "postgres of $dir stopped"
}

cmd_start_postgres() {
  [[ -f $dir/ports ]] || die "$dir was never started (no $dir/ports)"
  # Called from tests, which inherit scripts/test.sh's lock on the folder
  # (fd 9): the server must not keep it.
  exec 9<&-
  start_postgres
  wait_postgres
}

cmd_status() {
  local rc=0 pid
  if pid=$(tracked_pid redis) && redis_ping; then
    echo "redis     up    pid $pid  127.0.0.1:$REDIS_PORT"
  else
    echo "redis     down  127.0.0.1:$REDIS_PORT"; rc=1
  fi
  if pid=$(tracked_pid rabbitmq) && amqp_answers "$AMQP_PORT"; then
    echo "rabbitmq  up    pid $pid  127.0.0.1:$AMQP_PORT  node $RABBIT_NODE"
  else
    echo "rabbitmq  down  127.0.0.1:$AMQP_PORT"; rc=1
  fi
  if pid=$(tracked_pid postgres) && pg_ready; then
    echo "postgres  up    pid $pid  127.0.0.1:$PG_PORT"
  else
    echo "postgres  down  127.0.0.1:$PG_PORT"; rc=1
  fi
  if pid=$(tracked_pid epmd); then
    echo "epmd      up    pid $pid  (started from this folder)"
  fi
  return $rc
}

# Stops the folder's services and deletes its contents (the folder itself
# stays, so a caller may hold a lock on it), including a linked PostgreSQL
# folder elsewhere.
cmd_wipe() {
  cmd_stop
  if [[ -L $dir/pg ]]; then
    rm -rf -- "$(readlink -f -- "$dir/pg")"
  fi
  [[ -d $dir ]] && find "$dir" -mindepth 1 -delete
  log "wiped $dir"
}

case $action in
  start) cmd_start ;;
  stop) cmd_stop ;;
  wipe) cmd_wipe ;;
  status) cmd_status ;;
  restart-rabbitmq) cmd_restart_rabbitmq ;;
  stop-postgres) cmd_stop_postgres ;;
  start-postgres) cmd_start_postgres ;;
  env) write_env; cat "$dir/env" ;;
  *) usage ;;
esac
