#!/usr/bin/env bash
# Installs the Debian 12 packages rtmc needs to build, test and run locally,
# then the npm packages of the tests written for Node.js (`npm ci` from each
# folder's committed package-lock.json): tests/openapi (the OpenAPI check) and
# tests/browser (playwright-core, which drives Debian's chromium and never
# downloads a browser).
# Only calls apt-get when at least one package is missing (checked with
# dpkg-query), and npm when a lock file changed since its last `npm ci`, so
# it is a no-op of a few milliseconds on a prepared machine.
# Runs apt-get directly as root, through sudo otherwise.
#
# Note: on a machine with systemd, installing redis-server, rabbitmq-server and
# postgresql-15 also starts the distribution's own services on the standard
# ports (6379, 5672, 5432). rtmc's scripts use their own ports, so they do not
# collide; stop or disable those services if you do not want them.
set -euo pipefail

packages=(
  # toolchain
  build-essential g++ cmake ninja-build pkg-config
  # libraries (Boost 1.81, not Debian's default 1.74)
  libboost1.81-dev libboost-json1.81-dev
  librabbitmq-dev libhiredis-dev libpq-dev libjwt-dev libsodium-dev
  libspdlog-dev libcli11-dev libgtest-dev libgmock-dev
  # metrics registry and text format (core part only; no civetweb exposer)
  prometheus-cpp-dev
  # servers and the clients the scripts use to check them
  redis-server redis-tools rabbitmq-server postgresql-15 postgresql-client-15
  # used by scripts/*.sh: curl (health checks), runuser/setsid (util-linux),
  # timeout/realpath/od (coreutils), clang-format (test.sh's format check)
  curl util-linux coreutils procps clang-format
  # tests/openapi: Node.js runs the OpenAPI check (npm fetches its packages)
  nodejs
  # tests/browser: headless Chromium renders the web page
  chromium
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$package")
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
npm_folders=(tests/openapi tests/browser)

# npm ci in each folder unless its node_modules was installed from this very
# package-lock.json (a stamp with its hash).
install_npm_packages() {
  local folder dir stamp hash
  for folder in "${npm_folders[@]}"; do
    dir=$repo_root/$folder
    stamp=$dir/node_modules/.rtmc-lock-sha256
    hash=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [[ -f $stamp && $(<"$stamp") == "$hash" ]]; then
      echo "[install-deps] npm packages of $folder present"
      continue
    fi
    echo "[install-deps] npm ci in $folder"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$hash" >"$stamp"
  done
}

# Debian's nodejs comes without npm (NodeSource's includes it).
command -v npm >/dev/null || dpkg-query -W -f='${db:Status-Status}' npm 2>/dev/null | grep -qx installed ||
  missing+=(npm)

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[install-deps] all ${#packages[@]} packages present"
  install_npm_packages
  exit 0
fi

echo "[install-deps] installing: ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  echo "[install-deps] ERROR: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
  exit 1
fi

apt_options=(-y -q --no-install-recommends -o Acquire::Retries=3 -o Dpkg::Use-Pty=0)
started=$(date +%s)
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o Acquire::Retries=3 update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_options[@]}" "${missing[@]}"
echo "[install-deps] done in $(($(date +%s) - started))s"
install_npm_packages
