#!/usr/bin/env bash
# tessera setup: npm dependencies, a WebGPU adapter, the Fashion-MNIST data package and Chromium.
# Idempotent: a second run installs nothing and says so. Runs before node_modules exist.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
did=()
missing=()

# ---- npm dependencies ------------------------------------------------------------------------
lock_stamp=node_modules/.package-lock.json
if [ -d node_modules ] && [ -f "$lock_stamp" ] && ! [ package-lock.json -nt "$lock_stamp" ]; then
  say "npm dependencies: already installed"
else
  say "npm dependencies: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  did+=("npm ci")
fi

# ---- WebGPU adapter ----------------------------------------------------------------------------
# Dawn wants a writable XDG_RUNTIME_DIR; the engine sets one itself, the probe does the same.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/tessera-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

probe_adapter() { node scripts/probe-adapter.mjs 2>/dev/null; }

is_debian_bookworm() { [ -r /etc/os-release ] && grep -q '^VERSION_CODENAME=bookworm' /etc/os-release; }
is_root() { [ "$(id -u)" = 0 ]; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
}

# bookworm's Mesa 22 lavapipe lacks features Dawn needs; bookworm-backports carries Mesa 25.
ensure_backports_source() {
  local target=/etc/apt/sources.list.d/tessera-bookworm-backports.sources
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then return; fi
  local uris
  uris=$(awk '/^URIs:/{u=$2} /^Suites:/ && / bookworm( |$)/{print u; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uris" ] || uris=http://deb.debian.org/debian
  say "adding apt source $target (URIs: $uris, Suites: bookworm-backports)"
  cat >"$target" <<EOF
Types: deb
URIs: $uris
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_updated=0
}

adapter=$(probe_adapter || true)
if [ -n "$adapter" ]; then
  say "WebGPU adapter: already available"
elif is_debian_bookworm && is_root; then
  ensure_backports_source
  apt_update
  say "installing libvulkan1 mesa-vulkan-drivers from bookworm-backports"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports libvulkan1 mesa-vulkan-drivers >/dev/null
  did+=("Mesa Vulkan (lavapipe) from bookworm-backports")
  adapter=$(probe_adapter || true)
fi
if [ -z "$adapter" ]; then
  missing+=("a WebGPU adapter. On Debian bookworm as root: add bookworm-backports to apt and run
    apt-get install -t bookworm-backports libvulkan1 mesa-vulkan-drivers
  (Mesa >= 24 lavapipe). Elsewhere: a Vulkan, Metal or D3D12 driver that Dawn (npm 'webgpu') can use.
  Check with: node scripts/probe-adapter.mjs")
fi

# ---- Fashion-MNIST and Chromium (Debian packages) -----------------------------------------------
want_pkgs=()
[ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte ] || want_pkgs+=(dataset-fashion-mnist)
[ -x /usr/lib/chromium/chromium ] || want_pkgs+=(chromium)
if [ ${#want_pkgs[@]} -eq 0 ]; then
  say "Fashion-MNIST and Chromium: already installed"
elif command -v apt-get >/dev/null && is_root; then
  apt_update
  say "installing ${want_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want_pkgs[@]}" >/dev/null
  did+=("${want_pkgs[*]}")
else
  for p in "${want_pkgs[@]}"; do
    case $p in
      dataset-fashion-mnist) missing+=("Fashion-MNIST: apt-get install dataset-fashion-mnist (or point TESSERA_DATA / --data-dir at a folder of IDX files)");;
      chromium) missing+=("Chromium for browser tests: apt-get install chromium (expects /usr/lib/chromium/chromium)");;
    esac
  done
fi

# ---- summary --------------------------------------------------------------------------------------
[ -n "$adapter" ] && say "adapter: $adapter"
if [ ${#did[@]} -eq 0 ]; then say "nothing to do: everything was already in place"; else say "done: ${did[*]}"; fi
if [ ${#missing[@]} -gt 0 ]; then
  say "MISSING:"
  for m in "${missing[@]}"; do printf '  - %s\n' "$m"; done
  exit 1
fi
