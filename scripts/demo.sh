#!/bin/bash
# Shows the qmp tool at work on a throwaway QEMU (no guest, no disk).
# Usage: scripts/demo.sh BUILD_DIR      (run by `make demo` after the build)
#
# QEMU runs with -daemonize: it returns only once its QMP socket listens, so
# no step waits by sleeping.  QEMU also inherits the write end of a FIFO that
# nobody else holds; reading that FIFO to end-of-file proves QEMU has exited.
set -euo pipefail

build=${1:?usage: scripts/demo.sh BUILD_DIR}
qmp_bin=$(cd "$build" && pwd)/tools/qmp/qmp
qemu='qemu-system-x86_64'

if [ ! -x "$qmp_bin" ]; then
    echo "demo: $qmp_bin is missing; build first (make build)" >&2
    exit 1
fi
if ! command -v "$qemu" >/dev/null; then
    echo "demo: $qemu not found (Debian package qemu-system-x86)" >&2
    exit 1
fi

if [ -t 1 ]; then
    bold=$(printf '\033[1m') dim=$(printf '\033[2m') plain=$(printf '\033[0m')
else
    bold='' dim='' plain=''
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/libqmp-demo.XXXXXX") # mode 0700
pid=''
alive=''

cleanup() {
    local status=$?
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null && [ -n "$alive" ]; then
        # Wait (bounded) for QEMU to be gone before removing its directory.
        read -r -t 10 -u "$alive" || :
    fi
    rm -rf "$dir"
    [ "$status" -eq 0 ] || echo "demo: FAILED (exit status $status)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

heading() {
    printf '\n%s== %s%s\n' "$bold" "$1" "$plain"
}

# Shows the command line as a user would type it, then runs it.
qmp() {
    local shown='' arg
    for arg in "$@"; do
        case $arg in
        *[!A-Za-z0-9_./=:-]*) shown="$shown '$arg'" ;;
        *) shown="$shown $arg" ;;
        esac
    done
    printf '%s$ qmp%s%s\n' "$dim" "$shown" "$plain"
    "$qmp_bin" "$@"
}

# Start QEMU.  The FIFO is held open read-write until QEMU has its own copy
# of the write end, so that no open() blocks.
mkfifo "$dir/running"
exec {hold}<>"$dir/running"
"$qemu" -M none -nodefaults -display none -accel tcg \
    -qmp "unix:$dir/qmp.sock,server=on,wait=off" \
    -daemonize -pidfile "$dir/qemu.pid" 3>"$dir/running"
exec {alive}<"$dir/running" {hold}>&-
pid=$(cat "$dir/qemu.pid")

export QMP_SOCKET="$dir/qmp.sock"
echo "${bold}libqmp demo${plain}: a throwaway QEMU (pid $pid) listens on $QMP_SOCKET;"
echo "QMP_SOCKET is set, so the qmp commands below need no -s option."

heading "Which QEMU is this? (--trace shows the wire: greeting, negotiation, command)"
qmp --trace query-version 2>&1

heading "Its run state, indented with --pretty"
qmp --pretty query-status

heading "Pause the guest; STOP is the event that confirms it"
qmp --wait-event STOP stop

heading "Resume it; RESUME follows"
qmp -w RESUME cont

heading "Arguments as KEY=VALUE (or as one JSON object)"
qmp qom-get path=/machine property=type

heading "A human monitor (HMP) command; its text is printed as is"
qmp hmp 'info version'

heading "A QMP error reply: one line on stderr and exit status 1"
status=0
qmp device_del id=no-such-device 2>&1 || status=$?
echo "${dim}(exit status $status)${plain}"
[ "$status" -eq 1 ]

heading "Quit; SHUTDOWN is QEMU's last event"
qmp -w SHUTDOWN quit

heading "QEMU has exited"
# End-of-file on the FIFO means its last writer, QEMU, is gone; read gives
# a status above 128 only when the 10 s bound passed first.
status=0
read -r -t 10 -u "$alive" || status=$?
if [ "$status" -gt 128 ] || [ -e "$dir/qemu.pid" ]; then
    echo "demo: QEMU (pid $pid) is still running" >&2
    exit 1
fi
echo "QEMU (pid $pid) is gone and removed its pid file; the demo directory goes next."
pid=''
echo
echo "${bold}Demo complete.${plain} Try: $build/tools/qmp/qmp --help; man -l doc/qmp.1"
