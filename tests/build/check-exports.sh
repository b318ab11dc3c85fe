#!/bin/sh
# Checks that three lists of exported symbols are the same set:
#   - what the built shared library exports (nm -D --defined-only),
#   - the version script src/libqmp.sym,
#   - the QMP_EXPORT declarations in the public headers.
# Also checks that every export carries a LIBQMP_ version.
#
# Usage: check-exports.sh LIBQMP_SO LIBQMP_SYM HEADER...
set -eu

if [ $# -lt 3 ]; then
    echo "usage: $0 LIBQMP_SO LIBQMP_SYM HEADER..." >&2
    exit 2
fi
lib=$1
sym=$2
shift 2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. The library.  Version node names are absolute symbols (type A); the
#    rest look like "name@@LIBQMP_0.1" (binutils 2.35 and later) or "name".
nm -D --defined-only "$lib" | awk '
    $2 == "A" { next }
    NF >= 3 { print $3 }' >"$tmp/nm-raw"
sed 's/@.*//' "$tmp/nm-raw" | sort -u >"$tmp/nm"

unversioned=$(grep -v '@LIBQMP_' "$tmp/nm-raw" || true)
if grep -q '@' "$tmp/nm-raw" && [ -n "$unversioned" ]; then
    echo "exported without a LIBQMP_ version:" >&2
    echo "$unversioned" >&2
    exit 1
fi

# 2. The version script: names between "global:" and "local:", one per
#    entry, without comments.
sed -e 's@/\*.*\*/@@g' "$sym" | awk '
    /global:/ { on = 1; next }
    /local:/  { on = 0 }
    on {
        gsub(/[ \t]/, "")
        n = split($0, parts, ";")
        for (i = 1; i <= n; i++)
            if (parts[i] != "")
                print parts[i]
    }' | sort -u >"$tmp/sym"

# 3. The headers: drop comments and preprocessor lines (the definition of
#    QMP_EXPORT itself), cut the rest into declarations at ';', and take
#    the identifier before the first '(' after QMP_EXPORT.
for h in "$@"; do
    awk '
        BEGIN { text = "" }
        { text = text $0 "\n" }
        END {
            # Comments.
            out = ""
            while ((i = index(text, "/*")) > 0) {
                out = out substr(text, 1, i - 1) " "
                rest = substr(text, i + 2)
                j = index(rest, "*/")
                if (j == 0) { text = ""; break }
                text = substr(rest, j + 2)
            }
            text = out text
            # Preprocessor lines, with their continuations.
            n = split(text, lines, "\n")
            text = ""; cont = 0
            for (k = 1; k <= n; k++) {
                l = lines[k]
                if (cont || l ~ /^[ \t]*#/) {
                    cont = (l ~ /\\$/)
                    continue
                }
                text = text l " "
            }
            m = split(text, decls, ";")
            for (k = 1; k <= m; k++) {
                d = decls[k]
                p = index(d, "QMP_EXPORT")
                if (p == 0)
                    continue
                d = substr(d, p + length("QMP_EXPORT"))
                q = index(d, "(")
                if (q == 0) {
                    print "cannot parse declaration:" d > "/dev/stderr"
                    exit 1
                }
                d = substr(d, 1, q - 1)
                sub(/[ \t]+$/, "", d)
                if (match(d, /[A-Za-z_][A-Za-z0-9_]*$/))
                    print substr(d, RSTART, RLENGTH)
            }
        }' "$h"
done | sort -u >"$tmp/hdr"

status=0
compare() {
    # compare NAME_A FILE_A NAME_B FILE_B
    if ! cmp -s "$2" "$4"; then
        status=1
        only_a=$(comm -23 "$2" "$4")
        only_b=$(comm -13 "$2" "$4")
        if [ -n "$only_a" ]; then
            echo "in $1 but not in $3:"
            echo "$only_a" | sed 's/^/    /'
        fi
        if [ -n "$only_b" ]; then
            echo "in $3 but not in $1:"
            echo "$only_b" | sed 's/^/    /'
        fi
    fi
}
compare "the library (nm -D)" "$tmp/nm" "$(basename "$sym")" "$tmp/sym"
compare "the library (nm -D)" "$tmp/nm" "the headers (QMP_EXPORT)" "$tmp/hdr"
compare "$(basename "$sym")" "$tmp/sym" "the headers (QMP_EXPORT)" "$tmp/hdr"

if [ ! -s "$tmp/nm" ]; then
    echo "no exported symbols found in $lib" >&2
    status=1
fi
if [ $status -eq 0 ]; then
    echo "$(wc -l <"$tmp/nm") exported symbols agree"
fi
exit $status
