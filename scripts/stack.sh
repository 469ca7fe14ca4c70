#!/usr/bin/env bash
# The local rtmc stack: Debian packages, build, Redis + RabbitMQ + PostgreSQL,
# database migrations, one api, one gateway and one syncer, all as plain processes on
# 127.0.0.1 with their data, logs and PIDs under .stack/ (git-ignored).
#
#   scripts/stack.sh up       install what is missing, build, start everything
#   scripts/stack.sh down     stop what `up` started (servers, then services)
#   scripts/stack.sh status   what is running
#
# `up` is idempotent: running processes are kept, except a server whose binary
# was rebuilt since it started, which is restarted so `up` always runs the
# current build. Environment overrides: BUILD_DIR (default build/),
# STACK_DIR (.stack/), REDIS_PORT (6380), AMQP_PORT (5673), PG_PORT (5433),
# RTMC_API_LISTEN (127.0.0.1:8080), RTMC_GATEWAY_LISTEN (127.0.0.1:7000),
# RTMC_GATEWAY_HTTP_LISTEN (127.0.0.1:7080, the gateway's /healthz, /metrics and
# WebSocket /ws), RTMC_WS_ORIGINS (the api's origin under 127.0.0.1 and
# localhost: the pages it serves may open the gateway's WebSocket),
# RTMC_SYNCER_HTTP_LISTEN (127.0.0.1:7090, the syncer's /healthz and /metrics),
# REDIS_MAXMEMORY (1gb), RTMC_SKIP_DEPS=1 (no package check), RTMC_SKIP_BUILD=1.
set -euo pipefail

log_tag=stack
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stack_dir=$(realpath -m -- "${STACK_DIR:-$repo_root/.stack}")
export REDIS_PORT=${REDIS_PORT:-6380}
export AMQP_PORT=${AMQP_PORT:-5673}
export PG_PORT=${PG_PORT:-5433}
api_listen=${RTMC_API_LISTEN:-127.0.0.1:8080}
gateway_listen=${RTMC_GATEWAY_LISTEN:-127.0.0.1:7000}
gateway_http_listen=${RTMC_GATEWAY_HTTP_LISTEN:-127.0.0.1:7080}
# The origin a browser gives the api's pages, under both loopback names when
# the api listens on one of them.
api_origins() {
  local host=${api_listen%:*} port=${api_listen##*:}
  case $host in
    127.0.0.1 | localhost) echo "http://127.0.0.1:$port,http://localhost:$port" ;;
    *) echo "http://$api_listen" ;;
  esac
}
ws_origins=${RTMC_WS_ORIGINS:-$(api_origins)}
syncer_http_listen=${RTMC_SYNCER_HTTP_LISTEN:-127.0.0.1:7090}

api_bin=$build_dir/src/api/rtmc-api
gateway_bin=$build_dir/src/gateway/rtmc-gateway
syncer_bin=$build_dir/src/syncer/rtmc-syncer
chat_bin=$build_dir/src/chat/rtmc-chat
pids_dir=$stack_dir/pids
logs_dir=$stack_dir/logs
secret_file=$stack_dir/jwt-secret

services() { bash "$repo_root/scripts/services.sh" "$1" "$stack_dir"; }

# A relative path when the build lives in the checkout, for copy-paste hints.
shown() { local p=$1; [[ $p == "$repo_root"/* ]] && p=${p#"$repo_root"/}; echo "$p"; }

ensure_secret() {
  [[ -s $secret_file ]] && return 0
  # 48 random bytes -> 64 base64 characters (at least 32 bytes are required);
  # never leaves the stack folder.
  (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$secret_file.tmp")
  chmod 600 "$secret_file.tmp"
  mv "$secret_file.tmp" "$secret_file"
  log "generated JWT secret in $secret_file"
}

# Environment every server gets: files holding the service URLs (with their
# passwords) and the JWT secret, so no credential is on a command line or
# in an environment. Values from the caller's shell (e.g. a sourced
# .stack/env) are dropped: a value and a file together are refused.
server_env() {
  unset RTMC_REDIS RTMC_AMQP RTMC_PG RTMC_JWT_SECRET
  export RTMC_REDIS_FILE=$stack_dir/secrets/redis.url
  export RTMC_AMQP_FILE=$stack_dir/secrets/amqp.url
  export RTMC_PG_FILE=$stack_dir/secrets/pg.conninfo
  export RTMC_JWT_SECRET_FILE=$secret_file
  export RTMC_API_LISTEN=$api_listen
  export RTMC_GATEWAY_LISTEN=$gateway_listen
  export RTMC_GATEWAY_HTTP_LISTEN=$gateway_http_listen
  export RTMC_WS_ORIGINS=$ws_origins
  # The web page opens the gateway's WebSocket (GET /config.json on the api).
  export RTMC_API_WS_URL=ws://$gateway_http_listen/ws
  export RTMC_SYNCER_HTTP_LISTEN=$syncer_http_listen
}

# Starts server $1 (binary $2) unless it already runs the current binary.
start_server() {
  local name=$1 bin=$2 comm pid
  comm=$(basename "$bin")
  [[ -x $bin ]] || die "$bin not built"
  if pid=$(live_pid "$pids_dir/$name" "$comm"); then
    if [[ $bin -nt $pids_dir/$name ]]; then
      log "$name binary was rebuilt since pid $pid started; restarting it"
      stop_pid_file "$pids_dir/$name" "$comm" 15
    else
      log "$name already running (pid $pid)"
      return 0
    fi
  fi
  local host_port
  case $name in
    api) host_port=$api_listen ;;
    gateway) host_port=$gateway_listen ;;
    *) host_port=$syncer_http_listen ;;
  esac
  port_open "${host_port%:*}" "${host_port##*:}" &&
    die "$host_port ($name) is already taken by a process this stack did not start"
  setsid "$bin" </dev/null >>"$logs_dir/$name.log" 2>&1 &
  echo $! >"$pids_dir/$name"
  log "started $name (pid $!), log $logs_dir/$name.log"
}

# Waits until $2 (a command) succeeds while server $1 stays alive.
await_server() {
  local name=$1 what=$3 # $2, the binary's name, is not checked: see pid_file_running
  shift 3
  local deadline=$((SECONDS + ${SERVER_TIMEOUT_S:-60}))
  until "$@" >/dev/null 2>&1; do
    if ! pid_file_running "$pids_dir/$name"; then
      tail -n 20 "$logs_dir/$name.log" >&2 || true
      die "$name exited during start-up; log: $logs_dir/$name.log"
    fi
    ((SECONDS < deadline)) || die "$name did not $what within ${SERVER_TIMEOUT_S:-60}s; log: $logs_dir/$name.log"
    sleep 0.2
  done
}

api_healthy() { curl -fsS -m 2 "http://$api_listen/healthz"; }
gateway_accepts() { port_open "${gateway_listen%:*}" "${gateway_listen##*:}"; }
# Answers at all (503 while a store is down still means it runs).
syncer_answers() { curl -sS -m 2 -o /dev/null "http://$syncer_http_listen/healthz"; }

cmd_up() {
  local started
  started=$(now_s)
  install_deps
  if [[ ${RTMC_SKIP_BUILD:-0} != 1 ]]; then
    log "building in $(shown "$build_dir")"
    build_all "$build_dir"
  fi
  mkdir -p "$pids_dir" "$logs_dir"
  services start
  ensure_secret
  server_env
  local bin
  for bin in "$api_bin" "$gateway_bin" "$syncer_bin"; do
    [[ -x $bin ]] || die "$bin is missing: the build did not produce it (BUILD_DIR=$build_dir)"
  done
  # Migrations as their own step so a failure says so, before any server runs.
  "$api_bin" --migrate-only >>"$logs_dir/migrate.log" 2>&1 ||
    { tail -n 20 "$logs_dir/migrate.log" >&2; die "migrations failed; log: $logs_dir/migrate.log"; }
  log "database migrations applied"
  start_server api "$api_bin"
  start_server gateway "$gateway_bin"
  start_server syncer "$syncer_bin"
  await_server api rtmc-api "answer GET /healthz" api_healthy
  await_server gateway rtmc-gateway "accept TCP on $gateway_listen" gateway_accepts
  await_server syncer rtmc-syncer "answer GET /healthz" syncer_answers
  log "stack up in $(seconds_since "$started")s"
  local chat
  chat=$(shown "$chat_bin")
  [[ $api_listen == 127.0.0.1:8080 ]] || chat+=" --api http://$api_listen"
  [[ $gateway_listen == 127.0.0.1:7000 ]] || chat+=" --gateway $gateway_listen"
  cat <<EOF

rtmc is running (data, logs, PIDs: $(shown "$stack_dir")/)

Chat in a browser: open http://$api_listen/ (Register, then join a room, e.g. lobby)

  api      http://$api_listen     (the web page at /; GET /healthz, /users/NAME/status, /rooms,
                                     /rooms/NAME/messages, POST /register, /login, /refresh, /logout, /publishMessage)
  gateway  $gateway_listen          (TCP, one JSON object per line)
           ws://$gateway_http_listen/ws  (WebSocket, one JSON object per text message;
                                     origins $ws_origins)
           http://$gateway_http_listen     (GET /healthz, /metrics)
  syncer   http://$syncer_http_listen     (GET /healthz with the backlog per shard, /metrics)
  redis    127.0.0.1:$REDIS_PORT   rabbitmq amqp://127.0.0.1:$AMQP_PORT   postgres 127.0.0.1:$PG_PORT
           (user rtmc everywhere; passwords in $(shown "$stack_dir")/secrets/)

Chat (each in its own terminal; asks for a password, --register creates the
user the first time, joins room "lobby"; /help inside):
  $chat --user alice --register
  $chat --user bob --register
or over WebSocket at ws://$gateway_http_listen/ws (the same frames, one per text message).

Service URLs with credentials for your own shell:  source $(shown "$stack_dir")/env
  then e.g. redis-cli -u "\$RTMC_REDIS", psql "\$RTMC_PG"
Stop everything:                       scripts/stack.sh down
EOF
}

cmd_down() {
  stop_pid_file "$pids_dir/syncer" rtmc-syncer 15
  stop_pid_file "$pids_dir/gateway" rtmc-gateway 15
  stop_pid_file "$pids_dir/api" rtmc-api 15
  services stop
}

cmd_status() {
  local rc=0 pid
  if pid=$(live_pid "$pids_dir/api" rtmc-api) && api_healthy >/dev/null 2>&1; then
    echo "api       up    pid $pid  http://$api_listen"
  else
    echo "api       down  http://$api_listen"; rc=1
  fi
  if pid=$(live_pid "$pids_dir/gateway" rtmc-gateway) && gateway_accepts; then
    echo "gateway   up    pid $pid  $gateway_listen  http://$gateway_http_listen"
  else
    echo "gateway   down  $gateway_listen  http://$gateway_http_listen"; rc=1
  fi
  if pid=$(live_pid "$pids_dir/syncer" rtmc-syncer) && syncer_answers >/dev/null 2>&1; then
    echo "syncer    up    pid $pid  http://$syncer_http_listen  $(curl -sS -m 2 "http://$syncer_http_listen/healthz" 2>/dev/null | grep -o '"backlog_total":[0-9-]*' || true)"
  else
    echo "syncer    down  http://$syncer_http_listen"; rc=1
  fi
  services status || rc=1
  return $rc
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
