# shellcheck shell=bash
# Helpers shared by scripts/stack.sh, scripts/test.sh and scripts/services.sh
# (sourced, not run).
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

# Configures (once) and builds with Ninja: in $1 (default $build_dir,
# Release) the target $BUILD_TARGET (default all), with cmake arguments
# $2... for the first configure. ccache is used when installed, unless
# CMAKE_CXX_COMPILER_LAUNCHER says otherwise (empty: none).
build_all() {
  local dir=${1:-$build_dir}
  (($# > 0)) && shift
  local configure=(-DCMAKE_BUILD_TYPE=Release)
  (($# > 0)) && configure=("$@")
  if [[ ! -v CMAKE_CXX_COMPILER_LAUNCHER ]] && command -v ccache >/dev/null; then
    configure+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  if [[ ! -f $dir/build.ninja ]]; then
    [[ -f $dir/CMakeCache.txt ]] &&
      log "note: $dir was configured without Ninja; if configuring fails, delete it"
    cmake -S "$repo_root" -B "$dir" -G Ninja "${configure[@]}" ||
      die "cmake configure failed (build dir $dir)"
  fi
  cmake --build "$dir" -j"${BUILD_JOBS:-$(nproc)}" --target "${BUILD_TARGET:-all}" ||
    die "build failed (build dir $dir)"
}

# The PID in file $1 runs and is no zombie, whatever its name: for a server
# just started in the background, whose name is still that of the shell or
# of setsid until its exec, live_pid would say it is dead.
pid_file_running() {
  local pid
  [[ -f $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ && -e /proc/$pid ]] || return 1
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

# Liveness of a PID recorded in file $1 whose /proc comm must equal $2 (so a
# recycled PID is never mistaken for ours). Prints the PID.
live_pid() {
  local pid
  pid_file_running "$1" || return 1
  pid=$(<"$1")
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
  echo "$pid"
}

# Waits up to $2 seconds for PID $1 to exit; a zombie awaiting its reaper
# counts as gone. Fails on timeout.
wait_gone() {
  local pid=$1 limit=$2 start
  start=$(date +%s)
  while [[ -e /proc/$pid ]]; do
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
    (($(date +%s) - start >= limit)) && return 1
    sleep 0.2
  done
}

# SIGTERM, then SIGKILL after $3 seconds, to the process recorded in $1
# (if it still is a $2); removes the file.
stop_pid_file() {
  local file=$1 comm=$2 grace=${3:-15} pid
  pid=$(live_pid "$file" "$comm") || { rm -f "$file"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$grace"; then
    log "$comm (pid $pid) still running after ${grace}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || log "$comm (pid $pid) survived SIGKILL for 10s"
  fi
  rm -f "$file"
  log "stopped $comm (pid $pid)"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# A random password of 48 hex characters: safe unquoted in URLs, libpq
# strings and config files.
random_password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

# Writes $2 (plus a newline) to file $1, mode 600, atomically.
write_private() {
  (umask 077 && printf '%s\n' "$2" >"$1.tmp")
  chmod 600 "$1.tmp"
  mv -f "$1.tmp" "$1"
}
