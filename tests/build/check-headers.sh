#!/bin/sh
# Checks that every public header compiles on its own, twice in a row
# (include guard), as C99 with -pedantic and as C++11, warnings as errors.
# Adapters (include/qmp/adapters/*.h) are checked when pkg-config knows
# the event loop library they include; otherwise they are skipped.
#
# Usage: check-headers.sh INCLUDE_DIR
# Compilers: $CC (default cc) and $CXX (default: c++, g++ or clang++);
# either may be a command with arguments.  Output is TAP.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 INCLUDE_DIR" >&2
    exit 2
fi
incdir=$1
cc=${CC:-cc}
# C++: $CXX, else the first of c++, g++, clang++ that exists.
if [ -z "${CXX:-}" ]; then
    for c in c++ g++ clang++; do
        if command -v "$c" >/dev/null 2>&1; then
            CXX=$c
            break
        fi
    done
fi
cxx=${CXX:-c++}

jsonc_cflags=$(pkg-config --cflags json-c)
have_cxx=yes
command -v "${cxx%% *}" >/dev/null 2>&1 || have_cxx=no
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

n=0
failed=0

# ok|not ok line; on failure the compiler output as TAP diagnostics.
report() {
    # report STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        failed=$((failed + 1))
        echo "not ok $n - $2"
        sed 's/^/# /' "$tmp/out"
    fi
}

# pkg-config modules an adapter needs, from the headers it includes.
adapter_modules() {
    mods=""
    grep -q '#include <glib' "$1" && mods="$mods glib-2.0"
    grep -q '#include <uv.h>' "$1" && mods="$mods libuv"
    grep -q '#include <event2/' "$1" && mods="$mods libevent"
    echo "$mods"
}

for h in "$incdir"/qmp/*.h "$incdir"/qmp/adapters/*.h; do
    [ -e "$h" ] || continue
    rel=${h#"$incdir"/}
    extra=""
    case $rel in
    qmp/adapters/*)
        mods=$(adapter_modules "$h")
        if [ -n "$mods" ]; then
            # shellcheck disable=SC2086
            if ! extra=$(pkg-config --cflags $mods 2>/dev/null); then
                n=$((n + 1))
                echo "ok $n - $rel # SKIP needs$mods"
                n=$((n + 1))
                echo "ok $n - $rel as C++ # SKIP needs$mods"
                continue
            fi
        fi
        ;;
    esac
    # The adapters include their loop's own headers, and <uv.h> needs POSIX
    # declarations that strict C99 hides; libuv.h documents this.
    posix=
    case $rel in
    qmp/adapters/*) posix=-D_POSIX_C_SOURCE=200809L ;;
    esac
    printf '#include <%s>\n#include <%s>\nint qmp_header_test_dummy;\n' "$rel" "$rel" >"$tmp/t.c"
    cp "$tmp/t.c" "$tmp/t.cc"

    # shellcheck disable=SC2086
    if $cc -std=c99 $posix -pedantic -Werror -Wall -Wextra -Wstrict-prototypes \
        -I"$incdir" $jsonc_cflags $extra -c "$tmp/t.c" -o "$tmp/t.o" >"$tmp/out" 2>&1; then
        report 0 "$rel as C99"
    else
        report 1 "$rel as C99"
    fi
    if [ $have_cxx = no ]; then
        n=$((n + 1))
        echo "ok $n - $rel as C++11 # SKIP no C++ compiler ($cxx)"
        continue
    fi
    # shellcheck disable=SC2086
    if $cxx -std=c++11 -pedantic -Werror -Wall -Wextra \
        -I"$incdir" $jsonc_cflags $extra -c "$tmp/t.cc" -o "$tmp/t.o" >"$tmp/out" 2>&1; then
        report 0 "$rel as C++11"
    else
        report 1 "$rel as C++11"
    fi
done

echo "1..$n"
[ "$n" -gt 0 ] || { echo "# no headers found in $incdir"; exit 1; }
[ "$failed" -eq 0 ]
