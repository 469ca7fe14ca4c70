# shellcheck shell=bash
# Helpers shared by scripts/stack.sh and scripts/test.sh (sourced, not run).
# Expects `set -euo pipefail` in the caller and $log_tag set.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=$(realpath -m -- "${BUILD_DIR:-$repo_root/build}")

log() {
  # shellcheck disable=SC2154  # log_tag is set by the sourcing script
  printf '[%s %s] %s\n' "$log_tag" "$(date +%H:%M:%S)" "$*" >&2
}
die() { log "ERROR: $*"; exit 1; }

now_s() { date +%s.%N; }
seconds_since() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

install_deps() {
  if [[ ${RTMC_SKIP_DEPS:-0} == 1 ]]; then
    log "RTMC_SKIP_DEPS=1: not checking Debian packages"
    return 0
  fi
  bash "$repo_root/scripts/install-deps.sh"
}

# Configures (once) and builds everything in $build_dir with Ninja, Release.
build_all() {
  if [[ ! -f $build_dir/build.ninja ]]; then
    [[ -f $build_dir/CMakeCache.txt ]] &&
      log "note: $build_dir was configured without Ninja; if configuring fails, delete it"
    cmake -S "$repo_root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ||
      die "cmake configure failed (build dir $build_dir)"
  fi
  cmake --build "$build_dir" -j"${BUILD_JOBS:-$(nproc)}" || die "build failed (build dir $build_dir)"
}

# Liveness of a PID recorded in file $1 whose /proc comm must equal $2 (so a
# recycled PID is never mistaken for ours). Prints the PID.
live_pid() {
  local file=$1 comm=$2 pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
  echo "$pid"
}

# SIGTERM, then SIGKILL after $3 seconds, to the process recorded in $1.
stop_pid_file() {
  local file=$1 comm=$2 grace=${3:-15} pid waited=0
  pid=$(live_pid "$file" "$comm") || { rm -f "$file"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  while live_pid "$file" "$comm" >/dev/null; do
    if ((waited >= grace * 5)); then
      log "$comm (pid $pid) still running after ${grace}s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  rm -f "$file"
  log "stopped $comm (pid $pid)"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
