#!/usr/bin/env bash
# Install wrk (the HTTP load generator `make bench` drives the model servers with).
#
#   bash scripts/install-wrk.sh
#
# Idempotent: does nothing when `wrk` is on PATH or already at .tools/bin/wrk.
# Otherwise, from Debian/Ubuntu's own packages:
#   - as root: `apt-get install -y wrk` (after `apt-get update` if the package lists
#     are missing or stale);
#   - as any other user: `apt-get download` wrk and the libraries it needs that the
#     machine lacks (LuaJIT, OpenSSL 3), unpack them with `dpkg-deb -x` into
#     .tools/wrk, and put a launcher at .tools/bin/wrk that sets LD_LIBRARY_PATH.
# tests/benchmarks/bench_serving.py looks on PATH first, then at .tools/bin/wrk.
#
# Environment: WRK_TOOLS_DIR (default <repo>/.tools) changes where the user-level copy
# goes; WRK_INSTALL_MODE=download forces the user-level way even as root.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${WRK_TOOLS_DIR:-$REPO/.tools}"
MODE="${WRK_INSTALL_MODE:-auto}"

if [ "$MODE" = auto ] && command -v wrk >/dev/null 2>&1; then
  echo "wrk: already installed at $(command -v wrk)"
  exit 0
fi
# `wrk -v` prints its version and exits non-zero: look at what it printed.
runs() { local out; out="$("$1" -v 2>&1 || true)"; [[ "$out" == wrk* ]]; }
if [ -x "$TOOLS/bin/wrk" ] && runs "$TOOLS/bin/wrk"; then
  echo "wrk: already installed at $TOOLS/bin/wrk"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "error: wrk is not installed and this is not a Debian/Ubuntu machine (no apt-get):" >&2
  echo "  install wrk with your package manager (brew install wrk, dnf install wrk ...)" >&2
  echo "  or put a wrk binary at $TOOLS/bin/wrk" >&2
  exit 1
fi

if [ "$MODE" = auto ] && [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends wrk; then
    apt-get update
    apt-get install -y --no-install-recommends wrk
  fi
  echo "wrk: installed with apt-get at $(command -v wrk)"
  exit 0
fi

# User-level: download the packages (no root needed) and unpack them under $TOOLS.
has_library() { ldconfig -p 2>/dev/null | grep -q "$1"; }
first_available() {
  local name
  for name in "$@"; do
    if apt-cache show "$name" >/dev/null 2>&1; then
      echo "$name"
      return 0
    fi
  done
  return 1
}

packages=(wrk)
if ! has_library 'libluajit-5\.1\.so\.2'; then
  luajit="$(first_available libluajit-5.1-2 libluajit2-5.1-2)" || {
    echo "error: no LuaJIT package known to apt (run apt-get update as root first)" >&2
    exit 1
  }
  packages+=("$luajit")
fi
if ! has_library 'libssl\.so\.3'; then
  packages+=(libssl3)
fi

download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
(cd "$download" && apt-get download "${packages[@]}")
root="$TOOLS/wrk"
rm -rf "$root"
mkdir -p "$root" "$TOOLS/bin"
for deb in "$download"/*.deb; do
  dpkg-deb -x "$deb" "$root"
done
libs="$(find "$root" -name '*.so*' -printf '%h\n' | sort -u | paste -sd: -)"
cat >"$TOOLS/bin/wrk" <<EOF
#!/bin/sh
# Launcher written by scripts/install-wrk.sh: wrk and its libraries unpacked under $root.
LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/usr/bin/wrk" "\$@"
EOF
chmod +x "$TOOLS/bin/wrk"
runs "$TOOLS/bin/wrk" || {
  echo "error: $TOOLS/bin/wrk does not run; see $root" >&2
  exit 1
}
echo "wrk: installed (${packages[*]}) at $TOOLS/bin/wrk"
