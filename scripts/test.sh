#!/usr/bin/env bash
# The whole test suite (labels unit, integration, e2e) against freshly started
# Redis, RabbitMQ and PostgreSQL in .test-stack/ on ports that never collide
# with the local stack. Stops what it started on every exit path; exits
# non-zero on any failure, and when ctest finds no tests at all.
#
#   scripts/test.sh [extra ctest arguments, e.g. -L unit or -R redis]
#
# Environment overrides: BUILD_DIR (default build/), TEST_STACK_DIR
# (.test-stack/), TEST_REDIS_PORT (6390), TEST_AMQP_PORT (5683), TEST_PG_PORT
# (5443), TEST_TIMEOUT_S (per test, 600), RTMC_SKIP_DEPS=1, BUILD_JOBS.
set -euo pipefail

log_tag="test"
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

test_stack=$(realpath -m -- "${TEST_STACK_DIR:-$repo_root/.test-stack}")
export REDIS_PORT=${TEST_REDIS_PORT:-6390}
export AMQP_PORT=${TEST_AMQP_PORT:-5683}
export PG_PORT=${TEST_PG_PORT:-5443}
# Tests favour speed over durability: no Redis AOF, no fsync in PostgreSQL.
export RTMC_SERVICES_EPHEMERAL=1

timings=()
phase_started=
begin_phase() { phase_started=$(now_s); log "$1"; }
end_phase() { timings+=("$(printf '%-10s %6ss' "$1" "$(seconds_since "$phase_started")")"); }

total_started=$(now_s)
services_started=0

finish() {
  local rc=$?
  if [[ $services_started == 1 ]]; then
    begin_phase "stopping test services"
    bash "$repo_root/scripts/services.sh" stop "$test_stack" || rc=1
    end_phase stop
  fi
  timings+=("$(printf '%-10s %6ss' total "$(seconds_since "$total_started")")")
  echo "---- timing ----" >&2
  printf '  %s\n' "${timings[@]}" >&2
  if ((rc == 0)); then log "PASSED"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

begin_phase "checking Debian packages"
install_deps
end_phase deps

begin_phase "building in $build_dir"
build_all
end_phase build

# Checked before starting services: an empty suite is a failure, and a cheap one.
test_count=$(ctest --test-dir "$build_dir" -N "$@" | awk '/^Total Tests:/ { print $3 }')
[[ ${test_count:-0} -gt 0 ]] || die "ctest found no tests in $build_dir (arguments: ${*:-none})"

begin_phase "starting fresh services in $test_stack"
mkdir -p "$test_stack"
# Only one run at a time may own the folder (a second would wipe the first).
exec 9<"$test_stack"
flock -n 9 || die "another scripts/test.sh is using $test_stack"
services_started=1
# Leftovers of an interrupted run: stopped by their recorded PIDs, then deleted.
bash "$repo_root/scripts/services.sh" wipe "$test_stack" 9<&-
# 9<&-: the services must not inherit the lock, or a service outliving a
# killed run would block every later one.
bash "$repo_root/scripts/services.sh" start "$test_stack" 9<&-
end_phase services

# shellcheck source=/dev/null
. "$test_stack/env"
export RTMC_TEST_REDIS RTMC_TEST_AMQP RTMC_TEST_PG RTMC_REDIS RTMC_AMQP RTMC_PG
log "RTMC_TEST_REDIS=$RTMC_TEST_REDIS RTMC_TEST_AMQP=$RTMC_TEST_AMQP RTMC_TEST_PG='$RTMC_TEST_PG'"

begin_phase "running $test_count tests"
ctest_rc=0
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j1 --timeout "${TEST_TIMEOUT_S:-600}" "$@" || ctest_rc=$?
end_phase tests
((ctest_rc == 0)) || die "ctest failed (exit $ctest_rc)"
