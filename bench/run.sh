#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Runs the libqmp benchmarks: usage  bench/run.sh [BUILD_DIR]  (default: build)
#
#  1. builds bench/bench, bench/scale and bench/fastserver (setting up
#     BUILD_DIR as a release build if it does not exist yet);
#  2. starts the fast server and runs the whole timing table (medians of
#     several repetitions, then the real-QEMU rows if qemu-system-x86_64 is
#     installed);
#  3. runs the scale benchmarks (bench/scale: the non-blocking client
#     pipelined, a thousand connections from one thread, a silent server,
#     fifty real QEMUs), which start their own fast servers;
#  4. counts client instructions with callgrind: each measurement runs at
#     two sizes N1 and N2, and (I(N2) - I(N1)) / (N2 - N1) is the cost of
#     one operation with start-up cancelled out.  Only the bench or scale
#     process runs under valgrind; the servers are separate, native
#     processes.
#
# The callgrind summaries at the end are meant to be pasted into
# BENCHMARKS.md.  Environment: BENCH_ARGS adds options to the timing run
# (e.g. "--reps 9" or "--no-qemu"; --no-qemu skips the scale run's QEMUs
# too); SCALE_ARGS adds options to the scale run (e.g. "--conns 500");
# BENCH_NO_SCALE=1 skips the scale benchmarks; BENCH_NO_CALLGRIND=1 skips
# step 4; BENCH_TOP=N shows the N most expensive functions (self cost) of
# the libqmp measurements.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${1:-build}
SCHEMA=tests/data/query-qmp-schema.json
TOP=${BENCH_TOP:-12}

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --buildtype=release
fi
ninja -C "$BUILD" bench/bench bench/scale bench/fastserver >/dev/null

BENCH=$BUILD/bench/bench
SCALE=$BUILD/bench/scale
RUN_SCALE=1
if [ "${BENCH_NO_SCALE:-0}" = 1 ]; then
    RUN_SCALE=0
fi
SCALE_OPTS=()
SCALE_SPECS=()
case " ${BENCH_ARGS:-} " in
*" --no-qemu "*) SCALE_OPTS+=(--no-qemu) ;;
esac
FASTSERVER=$BUILD/bench/fastserver
TMP=$(mktemp -d /tmp/libqmp-bench.XXXXXX)
SERVER_PID=

cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server prints "ready" once it listens; wait for that line.
exec 3< <(exec "$FASTSERVER" --schema "$SCHEMA" --listen "$TMP/fast.sock")
SERVER_PID=$!
if ! read -r -t 30 line <&3 || [ "$line" != ready ]; then
    echo "run.sh: the fast server did not start" >&2
    exit 1
fi
SOCK=$TMP/fast.sock

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "== Timing (machine: $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r))"
# shellcheck disable=SC2086
"$BENCH" --server "$SOCK" ${BENCH_ARGS:-}

if [ "$RUN_SCALE" = 1 ]; then
    echo
    echo "== Scale (bench/scale: the non-blocking client)"
    # shellcheck disable=SC2086
    "$SCALE" "${SCALE_OPTS[@]}" ${SCALE_ARGS:-}
fi

if [ "${BENCH_NO_CALLGRIND:-0}" = 1 ]; then
    exit 0
fi
if ! command -v valgrind >/dev/null; then
    echo
    echo "== Instruction counts skipped: valgrind is not installed"
    exit 0
fi

# total_ir FILE: the instruction total of a callgrind profile.
total_ir() {
    awk '/^(summary|totals):/ { print $2; exit }' "$1"
}

# count NAME N: runs one measurement of N operations under callgrind,
# one repetition, no warm-up; prints the total instructions.
count() {
    local out=$TMP/cg.$1.$2
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$BENCH" --server "$SOCK" --only "$1" -n "$2" --reps 1 --warmup 0 --quiet \
        >"$TMP/cg.log" 2>&1 || {
        cat "$TMP/cg.log" >&2
        echo "run.sh: callgrind run of $1 failed" >&2
        exit 1
    }
    total_ir "$out"
}

# Measurement, N1, N2, label, target (instructions per operation).
SPECS=(
    "rt-raw            2000  4000 raw floor: query-status round trip|"
    "rt-client         2000  4000 libqmp query-status round trip (client)|<= 12000"
    "pipe-session      2000  4000 libqmp query-status pipelined (session)|"
    "ev-client        20000 40000 event routed into the client queue (+ take, free)|"
    "ev-client-decode 20000 40000 event routed + taken + data decoded|"
    "ev-session       20000 40000 event via session callback (count only)|"
    "schema-client        4     8 schema 207 KB: receive + decode (client)|"
    "schema-parse         4     8 schema 207 KB: qmp_json_parse alone|"
    "schema-tokener       4     8 schema 207 KB: json_tokener alone|"
    "parse-status      2000  4000 qmp_json_parse: query-status reply|"
    "tok-status        2000  4000 json_tokener: query-status reply|"
    "parse-event       2000  4000 qmp_json_parse: event|"
    "tok-event         2000  4000 json_tokener: event|"
)
# The same client code against a real QEMU (the instructions are the
# client's; QEMU's own time does not count).
case " ${BENCH_ARGS:-} " in
*" --no-qemu "*) ;;
*)
    if command -v qemu-system-x86_64 >/dev/null; then
        SPECS+=(
            "qemu-rt-raw        200   400 real QEMU: raw floor round trip|"
            "qemu-rt-client     200   400 real QEMU: libqmp round trip (client)|<= 12000"
        )
    fi
    ;;
esac

echo
echo "== Client instructions per operation (callgrind, (I(N2) - I(N1)) / (N2 - N1))"
SUMMARY=$TMP/summary
printf '| %-50s | %6s | %6s | %12s | %-10s |\n' "measurement" "N1" "N2" "instr/op" "target" \
    >"$SUMMARY"
printf '| %-50s | %6s | %6s | %12s | %-10s |\n' "---" "--:" "--:" "--:" "---" >>"$SUMMARY"
for spec in "${SPECS[@]}"; do
    read -r name n1 n2 rest <<<"${spec%%|*}"
    label=$rest
    target=${spec#*|}
    i1=$(count "$name" "$n1")
    i2=$(count "$name" "$n2")
    per=$(awk -v a="$i1" -v b="$i2" -v n1="$n1" -v n2="$n2" \
        'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')
    printf '| %-50s | %6s | %6s | %12s | %-10s |\n' "$label" "$n1" "$n2" \
        "$per" "$target" >>"$SUMMARY"
    printf '.' >&2
done
echo >&2
cat "$SUMMARY"

# The scale measurements: bench/scale --only NAME -n N, which starts its
# own (native) fast server.  "many" runs N calls on each of a thousand
# connections, so its N2 - N1 is a thousand times the difference of N.
if [ "$RUN_SCALE" = 1 ]; then
    # count_scale NAME N: like count, for bench/scale.
    count_scale() {
        local out=$TMP/cg.$1.$2
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$SCALE" --only "$1" -n "$2" --quiet >"$TMP/cg.log" 2>&1 || {
            cat "$TMP/cg.log" >&2
            echo "run.sh: callgrind run of scale $1 failed" >&2
            exit 1
        }
        total_ir "$out"
    }
    # Measurement, N1, N2, operations per unit of N, label.
    SCALE_SPECS=(
        "raw8       20000 40000    1 raw floor pipelined, 8 in flight (no JSON)"
        "pipe8      20000 40000    1 execute_async, max_in_flight 8, qmp_loop"
        "pipe8-own  20000 40000    1 execute_async, max_in_flight 8, own epoll loop"
        "raw64      20000 40000    1 raw floor pipelined, 64 in flight (no JSON)"
        "pipe64     20000 40000    1 execute_async, max_in_flight 64, qmp_loop"
        "pipe64-own 20000 40000    1 execute_async, max_in_flight 64, own epoll loop"
        "many           8    16 1000 1000 connections, per call (1 event per call)"
    )
    echo
    echo "== Scale: client instructions per command (callgrind, (I(N2) - I(N1)) / (N2 - N1))"
    {
        printf '| %-52s | %6s | %6s | %12s |\n' "measurement" "N1" "N2" "instr/cmd"
        printf '| %-52s | %6s | %6s | %12s |\n' "---" "--:" "--:" "--:"
    } >"$SUMMARY"
    for spec in "${SCALE_SPECS[@]}"; do
        read -r name n1 n2 per label <<<"$spec"
        i1=$(count_scale "$name" "$n1")
        i2=$(count_scale "$name" "$n2")
        res=$(awk -v a="$i1" -v b="$i2" -v n1="$n1" -v n2="$n2" -v k="$per" \
            'BEGIN { printf "%.0f", (b - a) / ((n2 - n1) * k) }')
        printf '| %-52s | %6s | %6s | %12s |\n' "$label" "$((n1 * per))" "$((n2 * per))" \
            "$res" >>"$SUMMARY"
        printf '.' >&2
    done
    echo >&2
    cat "$SUMMARY"
fi

if [ "$TOP" -gt 0 ] && command -v callgrind_annotate >/dev/null; then
    TOP_NAMES="rt-client ev-client ev-client-decode schema-client"
    if [ "$RUN_SCALE" = 1 ]; then
        TOP_NAMES="$TOP_NAMES pipe8 many"
    fi
    for name in $TOP_NAMES; do
        n2=$(printf '%s\n' "${SPECS[@]}" "${SCALE_SPECS[@]}" |
            awk -v n="$name" '$1 == n { print $3 }')
        echo
        echo "== Top $TOP functions by own instructions: $name, N=$n2 (start-up included)"
        # awk reads everything (no early exit, so no SIGPIPE under pipefail).
        callgrind_annotate --inclusive=no "$TMP/cg.$name.$n2" 2>/dev/null |
            awk -v top="$TOP" '/file:function/ { on = 1; getline; next }
                on && NF && shown < top { sub(/ \[[^]]*\]$/, ""); print; shown++ }'
    done
fi
