#!/usr/bin/env bash
# The whole test suite (labels unit, integration, e2e) against freshly started
# Redis, RabbitMQ and PostgreSQL in .test-stack/ on ports that never collide
# with the local stack, then the unit and e2e tests again from a sanitizer
# build (AddressSanitizer, LeakSanitizer, UBSan) against the same services,
# and a clang-format check. One rtmc-syncer runs against the test services
# for the whole run (over the sync streams of ingest shards 0-15, as the
# servers the e2e tests start use; tests that look at sync stream entries
# themselves use shards above those); its log stays in
# TEST_STACK_DIR/logs/syncer.log. Stops what it started on every exit path; exits
# non-zero on any failure, any sanitizer report, format drift, and when ctest
# finds no tests at all.
#
#   scripts/test.sh [extra ctest arguments, e.g. -L unit or -R redis]
#   scripts/test.sh --format-only     only the clang-format check
#
# With ctest arguments (a developer's partial run) the sanitizer phase is
# skipped unless RTMC_SANITIZE=1; RTMC_SANITIZE=0 always skips it.
#
# Environment overrides: BUILD_DIR (default build/), ASAN_BUILD_DIR
# (build-asan/), TEST_STACK_DIR (.test-stack/), TEST_REDIS_PORT (6390),
# TEST_AMQP_PORT (5683), TEST_PG_PORT (5443), TEST_TIMEOUT_S (per test, 600),
# RTMC_SANITIZE (see above), RTMC_SKIP_FORMAT=1, RTMC_SKIP_DEPS=1, BUILD_JOBS.
set -euo pipefail

log_tag="test"
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

format_only=0
if [[ ${1:-} == --format-only ]]; then
  format_only=1
  shift
fi

test_stack=$(realpath -m -- "${TEST_STACK_DIR:-$repo_root/.test-stack}")
asan_dir=$(realpath -m -- "${ASAN_BUILD_DIR:-$repo_root/build-asan}")
export REDIS_PORT=${TEST_REDIS_PORT:-6390}
export AMQP_PORT=${TEST_AMQP_PORT:-5683}
export PG_PORT=${TEST_PG_PORT:-5443}
# Tests favour speed over durability: no Redis AOF, no fsync in PostgreSQL.
export RTMC_SERVICES_EPHEMERAL=1

sanitize=${RTMC_SANITIZE:-}
if [[ -z $sanitize ]]; then
  (($# == 0)) && sanitize=1 || sanitize=0
fi

timings=()
phase_started=
begin_phase() { phase_started=$(now_s); log "$1"; }
end_phase() { timings+=("$(printf '%-11s %6ss' "$1" "$(seconds_since "$phase_started")")"); }

total_started=$(now_s)
services_started=0
syncer_pid_file=
failures=()

finish() {
  local rc=$?
  if [[ -n $syncer_pid_file ]]; then
    stop_pid_file "$syncer_pid_file" rtmc-syncer 15 || rc=1
  fi
  if [[ $services_started == 1 ]]; then
    begin_phase "stopping test services"
    bash "$repo_root/scripts/services.sh" stop "$test_stack" || rc=1
    end_phase stop
  fi
  ((${#failures[@]} == 0)) || rc=1
  timings+=("$(printf '%-11s %6ss' total "$(seconds_since "$total_started")")")
  echo "---- timing ----" >&2
  printf '  %s\n' "${timings[@]}" >&2
  if ((${#failures[@]} > 0)); then
    echo "---- failed ----" >&2
    printf '  %s\n' "${failures[@]}" >&2
  fi
  if ((rc == 0)); then log "PASSED"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# clang-format --dry-run over every C++ file of src/, bench/ and tests/:
# fails (listing the files) when one differs from what .clang-format makes.
check_format() {
  command -v clang-format >/dev/null || die "clang-format is not installed (scripts/install-deps.sh installs it)"
  local files drift
  mapfile -t files < <(cd "$repo_root" &&
    find src bench tests -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' \) | sort)
  ((${#files[@]} > 0)) || die "no C++ files found under src/ bench/ tests/"
  mapfile -t drift < <(cd "$repo_root" && clang-format --dry-run --Werror "${files[@]}" 2>&1 |
    sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: error: code should be clang-formatted.*/\1/p' | sort -u)
  if ((${#drift[@]} > 0)); then
    log "clang-format: ${#drift[@]} of ${#files[@]} files differ from .clang-format ($(clang-format --version | grep -o 'version [0-9.]*')):"
    printf '    %s\n' "${drift[@]}" >&2
    log "fix: clang-format -i \$(git ls-files 'src/*.[ch]pp' 'bench/*.[ch]pp' 'tests/*.[ch]pp')"
    return 1
  fi
  log "clang-format: all ${#files[@]} files match .clang-format"
}

if ((format_only)); then
  begin_phase "checking formatting"
  check_format || failures+=("format: files differ from .clang-format")
  end_phase format
  exit 0
fi

begin_phase "checking Debian packages"
install_deps
end_phase deps

if [[ ${RTMC_SKIP_FORMAT:-0} != 1 ]]; then
  # Drift fails the run, but only at the end: the tests still run.
  begin_phase "checking formatting"
  check_format || failures+=("format: files differ from .clang-format (scripts/test.sh --format-only)")
  end_phase format
fi

begin_phase "building in $build_dir"
build_all "$build_dir"
end_phase build

# -O1 keeps the sanitizer build and its tests fast; -g1 gives reports file
# and line. Asserts stay on. Without ctest arguments only what the sanitizer
# run executes is built: the unit and e2e tests and the servers.
if ((sanitize)); then
  begin_phase "building with sanitizers in $asan_dir"
  asan_target=all
  (($# == 0)) && asan_target=rtmc_unit_e2e_tests
  BUILD_TARGET=$asan_target build_all "$asan_dir" -DRTMC_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1"
  end_phase asan-build
fi

# Checked before starting services: an empty suite is a failure, and a cheap one.
test_count=$(ctest --test-dir "$build_dir" -N "$@" | awk '/^Total Tests:/ { print $3 }')
[[ ${test_count:-0} -gt 0 ]] || die "ctest found no tests in $build_dir (arguments: ${*:-none})"
# Without arguments: the labels built above (integration tests are not).
# Listener.OutOfDescriptorsPausesAndRecovers uses up every file descriptor
# of the process on purpose; UBSan's vptr check then cannot open the pipe it
# probes memory with and reports a false "invalid vptr". It runs in the
# normal build only.
asan_args=("$@")
(($# == 0)) && asan_args=(-L '^(unit|e2e)$' -E '^Listener\.OutOfDescriptorsPausesAndRecovers$')
if ((sanitize)); then
  asan_count=$(ctest --test-dir "$asan_dir" -N "${asan_args[@]}" | awk '/^Total Tests:/ { print $3 }')
  [[ ${asan_count:-0} -gt 0 ]] || die "ctest found no tests in $asan_dir (arguments: ${asan_args[*]})"
fi

begin_phase "starting fresh services in $test_stack"
mkdir -p "$test_stack"
# Only one run at a time may own the folder (a second would wipe the first).
exec 9<"$test_stack"
flock -n 9 || die "another scripts/test.sh is using $test_stack"
services_started=1
# Leftovers of an interrupted run: stopped by their recorded PIDs (the
# syncer first: the wipe would delete its PID file), then deleted.
stop_pid_file "$test_stack/pids/syncer" rtmc-syncer 15
bash "$repo_root/scripts/services.sh" wipe "$test_stack" 9<&-
# 9<&-: the services must not inherit the lock, or a service outliving a
# killed run would block every later one.
bash "$repo_root/scripts/services.sh" start "$test_stack" 9<&-
end_phase services

# The service URLs carry the test services' passwords; DIR/env is mode 600.
# shellcheck source=/dev/null
. "$test_stack/env"
export RTMC_TEST_REDIS RTMC_TEST_AMQP RTMC_TEST_PG RTMC_REDIS RTMC_AMQP RTMC_PG
# Values and files together are refused by the servers; tests pass values.
unset RTMC_REDIS_FILE RTMC_AMQP_FILE RTMC_PG_FILE RTMC_JWT_SECRET_FILE
log "test services: redis 127.0.0.1:$REDIS_PORT, amqp 127.0.0.1:$AMQP_PORT, postgres 127.0.0.1:$PG_PORT, user rtmc (passwords in $test_stack/secrets/)"

# The schema first (the api applies migrations), so the syncer's first batch
# finds its tables; then the syncer, by PID.
begin_phase "starting the test stack's syncer"
"$build_dir/src/api/rtmc-api" --migrate-only >"$test_stack/logs/migrate.log" 2>&1 ||
  { tail -n 20 "$test_stack/logs/migrate.log" >&2; die "migrations failed; log: $test_stack/logs/migrate.log"; }
syncer_pid_file=$test_stack/pids/syncer
RTMC_SYNCER_HTTP_LISTEN=127.0.0.1:0 RTMC_INGEST_SHARDS=16 \
  setsid "$build_dir/src/syncer/rtmc-syncer" </dev/null >>"$test_stack/logs/syncer.log" 2>&1 9<&- &
echo $! >"$syncer_pid_file"
# Up means in its consumer group: tests that count on it must not wait on a
# syncer that died at start.
syncer_deadline=$((SECONDS + 30))
until grep -q "in group" "$test_stack/logs/syncer.log" 2>/dev/null; do
  pid_file_running "$syncer_pid_file" ||
    { tail -n 20 "$test_stack/logs/syncer.log" >&2; die "the test stack's syncer exited at start"; }
  ((SECONDS < syncer_deadline)) || die "the test stack's syncer did not join its group within 30s"
  sleep 0.2
done
log "syncer pid $(<"$syncer_pid_file"), log $test_stack/logs/syncer.log"
end_phase syncer

run_ctest() {
  ctest --test-dir "$1" --output-on-failure --no-tests=error -j1 --timeout "${TEST_TIMEOUT_S:-600}" "${@:2}"
}

begin_phase "running $test_count tests"
run_ctest "$build_dir" "$@" || failures+=("ctest in $build_dir (exit $?)")
end_phase tests

if ((sanitize)); then
  begin_phase "running $asan_count tests built with sanitizers"
  # Every report ends its process and lands in a file, so one in a server
  # the e2e tests started (whose exit status a test may not look at) fails
  # the run as well.
  reports=$asan_dir/sanitizer-reports
  rm -rf "$reports"
  mkdir -p "$reports"
  asan_rc=0
  ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:log_path=$reports/asan" \
    UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$reports/ubsan" \
    run_ctest "$asan_dir" "${asan_args[@]}" || asan_rc=$?
  ((asan_rc == 0)) || failures+=("ctest in $asan_dir (exit $asan_rc)")
  mapfile -t found < <(find "$reports" -type f | sort)
  if ((${#found[@]} > 0)); then
    failures+=("${#found[@]} sanitizer report(s) in $reports")
    for report in "${found[@]}"; do
      echo "---- $report ----" >&2
      head -n 80 "$report" >&2
    done
  fi
  end_phase asan-tests
fi
