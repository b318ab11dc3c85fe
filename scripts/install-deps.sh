#!/bin/sh
# Installs the Debian packages libqmp needs to build, test and demo.
# As root, missing packages are installed with apt-get; otherwise the exact
# command is printed and the script fails.  Usage: install-deps.sh [demo|test]
set -eu

what=${1:-test}

# Build and run: compiler, build system, JSON library, QEMU for the demo.
pkgs="gcc libc6-dev make meson ninja-build pkg-config libjson-c-dev qemu-system-x86"
# The event-loop adapters' examples and tests (the library links none).
pkgs="$pkgs libglib2.0-dev libuv1-dev libevent-dev"
if [ "$what" = test ]; then
    # Tests: valgrind memcheck, clang + its runtime for the libFuzzer build,
    # gcc's sanitizer runtimes come with gcc.
    pkgs="$pkgs valgrind clang libclang-rt-14-dev"
fi

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "libqmp needs these Debian packages:$missing" >&2
    echo "Install them as root with:" >&2
    echo "    apt-get update && $cmd" >&2
    exit 1
fi

echo "Installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
