#!/bin/sh
# Checks the generated pkg-config files without installing anything:
#   - meson-private/libqmp.pc (what gets installed) exists, names the
#     library and requires json-c, whose types appear in our headers;
#   - a small program compiles and links with the flags of the
#     uninstalled libqmp.pc (meson-uninstalled/) and runs, printing the
#     project's version.
#
# Usage: check-pkgconfig.sh BUILD_DIR VERSION [EXTRA_CFLAG...]
# EXTRA_CFLAGs are added to the compile and link (e.g. the sanitizer flags
# of the build, which an instrumented libqmp.so needs).  $CC is the
# compiler (default cc).  Output is TAP.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 BUILD_DIR VERSION [EXTRA_CFLAG...]" >&2
    exit 2
fi
builddir=$1
version=$2
shift 2
cc=${CC:-cc}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0

ok() {
    echo "ok $1 - $2"
}
not_ok() {
    failed=1
    echo "not ok $1 - $2"
    [ -s "$tmp/out" ] && sed 's/^/# /' "$tmp/out"
    : >"$tmp/out"
}

echo "1..4"
: >"$tmp/out"

pc=$builddir/meson-private/libqmp.pc
if [ -f "$pc" ] && grep -q '^Name: libqmp$' "$pc" &&
    grep -q "^Version: $version\$" "$pc" && grep -q -- '-lqmp' "$pc"; then
    ok 1 "libqmp.pc names the library and version $version"
else
    [ -f "$pc" ] && cat "$pc" >"$tmp/out"
    not_ok 1 "libqmp.pc names the library and version $version ($pc)"
fi

# json-c must be in Requires (not only Requires.private): our headers use
# its types, so users compile against its headers.
if [ -f "$pc" ] && grep -E -q '^Requires:.*(^|[ ,:])json-c([ ,<>=]|$)' "$pc"; then
    ok 2 "libqmp.pc requires json-c"
else
    [ -f "$pc" ] && cat "$pc" >"$tmp/out"
    not_ok 2 "libqmp.pc requires json-c"
fi

export PKG_CONFIG_PATH="$builddir/meson-uninstalled${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
cat >"$tmp/prog.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <qmp/qmp.h>

int main(int argc, char **argv)
{
    qmp_session *s = NULL;
    json_object *v = NULL;
    int ok;

    if (qmp_session_new(&s) < 0 || qmp_json_parse("[1]", 3, 0, &v, NULL) < 0)
        return 1;
    ok = argc == 2 && strcmp(qmp_version_string(), argv[1]) == 0;
    printf("libqmp %s\n", qmp_version_string());
    json_object_put(v);
    qmp_session_unref(s);
    return ok ? 0 : 1;
}
EOF
# shellcheck disable=SC2046,SC2086
if flags=$(pkg-config --cflags --libs libqmp 2>"$tmp/out") &&
    $cc "$@" "$tmp/prog.c" -o "$tmp/prog" $flags >>"$tmp/out" 2>&1; then
    ok 3 "a program builds with pkg-config --cflags --libs libqmp ($flags)"
    # The uninstalled library is found where its -L points.
    libdirs=$(pkg-config --libs-only-L libqmp | sed -e 's/^ *-L//' -e 's/  *-L/:/g' -e 's/ *$//')
    if LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/prog" "$version" \
        >"$tmp/out" 2>&1; then
        ok 4 "it runs and sees version $version"
    else
        not_ok 4 "it runs and sees version $version"
    fi
else
    not_ok 3 "a program builds with pkg-config --cflags --libs libqmp"
    echo "ok 4 - it runs # SKIP not built"
fi
exit $failed
