#!/bin/bash
# Runs libqmp's test phases, each in its own build directory:
#
#   build     build/ (debugoptimized, -Dwerror=true): every test suite
#   asan      build-asan/ (AddressSanitizer + UBSan, leaks fatal): every suite
#   tsan      build-tsan/ (ThreadSanitizer): suites threads and fake, the
#             ones where several threads share memory (a client shared by
#             many threads; the client and the fake QEMU's thread)
#   valgrind  build/ under valgrind memcheck: suites qemu, client, fake, unit,
#             threads
#   fuzz      build-fuzz/ (clang, -Dfuzz=true): each libFuzzer target for a
#             short, bounded run over its seed corpus
#
# Every phase runs even when an earlier one failed (valgrind needs build/
# though).  At the end a summary per phase is printed, and the very last
# line is "N passed, N failed", totalled over all phases: each meson test
# counts once (from the phase's meson-logs JSON), each fuzz target's run
# counts once, and a phase that cannot configure or build counts as one
# failure.  The exit status is 0 only when nothing failed.
#
# Usage: scripts/run-tests.sh [PHASE...]       (default: all five)
#
# Environment:
#   BUILD, BUILD_ASAN, BUILD_TSAN,  build directories (build, build-asan,
#   BUILD_FUZZ                      build-tsan, build-fuzz)
#   MESON_TESTTHREADS               tests run in parallel (default: CPUs)
#   FUZZ_RUNS, FUZZ_SECONDS         bounds of each fuzz run (100000, 30)
#
# Existing build directories are reused; if their options differ they are
# reconfigured, and if their compiler differs they are wiped first.
#
# Deliberately no "set -e": a failing phase must not stop the others.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
top=$(pwd)

BUILD=${BUILD:-build}
BUILD_ASAN=${BUILD_ASAN:-build-asan}
BUILD_TSAN=${BUILD_TSAN:-build-tsan}
BUILD_FUZZ=${BUILD_FUZZ:-build-fuzz}
FUZZ_RUNS=${FUZZ_RUNS:-100000}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
cpus=$(nproc 2>/dev/null || echo 2)
export MESON_TESTTHREADS=${MESON_TESTTHREADS:-$cpus}

common_opts=(-Dbuildtype=debugoptimized -Dwerror=true)
valgrind_suites=(qemu client fake unit threads)
tsan_suites=(threads fake)
# nouserintercepts: memcheck intercepts malloc in libc only, so a test
# that supplies its own malloc on top of libc's (the allocation-failure
# walk) keeps it, while memcheck still sees every allocation.
# shellcheck disable=SC2054 # the commas are part of the options
valgrind_cmd=(valgrind --error-exitcode=99 --leak-check=full
    --show-leak-kinds=definite,indirect,possible
    --errors-for-leak-kinds=definite,indirect,possible --track-fds=no --quiet
    --soname-synonyms=somalloc=nouserintercepts)
fuzz_targets=(json session template)

trap 'echo "run-tests: interrupted" >&2; exit 130' INT TERM

# Results, one entry per phase run.
phase_names=()
phase_pass=()
phase_fail=()
phase_skip=()
phase_secs=()
phase_notes=()
phase_start=0
cur_pass=0
cur_fail=0
cur_skip=0
cur_notes=""

banner() {
    echo
    echo "==== $* ===="
}

begin_phase() {
    banner "phase $1"
    phase_start=$SECONDS
    cur_pass=0
    cur_fail=0
    cur_skip=0
    cur_notes=""
}

note() {
    cur_notes="$cur_notes$1"$'\n'
}

end_phase() {
    phase_names+=("$1")
    phase_pass+=("$cur_pass")
    phase_fail+=("$cur_fail")
    phase_skip+=("$cur_skip")
    phase_secs+=($((SECONDS - phase_start)))
    phase_notes+=("$cur_notes")
}

# Prints "id" of the C compiler a configured build directory uses.
dir_compiler() {
    python3 - "$1/meson-info/intro-targets.json" <<'EOF'
import json, os, sys
try:
    targets = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(0)
for t in targets:
    for src in t.get("target_sources", []):
        if src.get("language") == "c" and src.get("compiler"):
            print(os.path.basename(src["compiler"][0]))
            sys.exit(0)
EOF
}

# Succeeds when every -Dname=value given matches the directory's options.
options_match() {
    local dir=$1
    shift
    python3 - "$dir/meson-info/intro-buildoptions.json" "$@" <<'EOF'
import json, sys
try:
    opts = {o["name"]: o["value"] for o in json.load(open(sys.argv[1]))}
except (OSError, ValueError):
    sys.exit(1)
def text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(text(x) for x in v)
    return str(v)
for arg in sys.argv[2:]:
    name, _, want = arg[2:].partition("=")
    if name not in opts or text(opts[name]) != want:
        sys.exit(1)
EOF
}

# configure DIR CC OPTION...: makes DIR a build directory with these
# options, reusing what is there.  CC "" means whatever meson picks.
configure() {
    local dir=$1 want_cc=$2
    shift 2
    local -a env_cc=()
    [ -n "$want_cc" ] && env_cc=(env "CC=$want_cc")

    if [ -f "$dir/meson-private/coredata.dat" ] && [ -f "$dir/build.ninja" ]; then
        local have_cc
        have_cc=$(dir_compiler "$dir")
        if [ -n "$want_cc" ] && [ -n "$have_cc" ] && [[ $have_cc != *"$want_cc"* ]]; then
            echo "run-tests: $dir was configured with $have_cc, not $want_cc: wiping it"
            "${env_cc[@]}" meson setup --wipe "$dir" "$@"
            return
        fi
        if options_match "$dir" "$@"; then
            echo "run-tests: reusing $dir"
            return 0
        fi
        echo "run-tests: reconfiguring $dir"
        meson configure "$dir" "$@" && return 0
        echo "run-tests: reconfiguring failed, wiping $dir"
        "${env_cc[@]}" meson setup --wipe "$dir" "$@"
        return
    fi
    if [ -d "$dir/meson-private" ]; then
        "${env_cc[@]}" meson setup --wipe "$dir" "$@"
    else
        "${env_cc[@]}" meson setup "$dir" "$@"
    fi
}

# Adds the results in a meson JSON test log to the current phase.
count_log() {
    local log=$1 out
    out=$(python3 - "$log" <<'EOF'
import json, sys
passed = failed = skipped = 0
bad = []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    t = json.loads(line)
    result = t.get("result")
    if result in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif result == "SKIP":
        skipped += 1
    else:
        failed += 1
        bad.append("%s: %s" % (result, t.get("name")))
print(passed, failed, skipped)
for b in bad:
    print(b)
EOF
    ) || { cur_fail=$((cur_fail + 1)); note "cannot read $log"; return; }
    local counts p f s
    counts=$(head -n 1 <<<"$out")
    read -r p f s <<<"$counts"
    cur_pass=$((cur_pass + p))
    cur_fail=$((cur_fail + f))
    cur_skip=$((cur_skip + s))
    while IFS= read -r line; do
        [ -n "$line" ] && note "$line"
    done < <(tail -n +2 <<<"$out")
}

# run_meson_tests DIR LOGBASE [meson test options...]
run_meson_tests() {
    local dir=$1 logbase=$2
    shift 2
    # meson names the log LOGBASE.json, or LOGBASE-WRAPPER.json when
    # tests run under a wrapper.
    local -a old
    shopt -s nullglob
    old=("$dir/meson-logs/$logbase".json "$dir/meson-logs/$logbase"-*.json)
    shopt -u nullglob
    rm -f "${old[@]}"
    meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes "$MESON_TESTTHREADS" \
        --logbase "$logbase" "$@"
    local rc=$? log
    log=$(find "$dir/meson-logs" -maxdepth 1 \( -name "$logbase.json" -o -name "$logbase-*.json" \) \
        -print | head -n 1)
    if [ -n "$log" ]; then
        count_log "$log"
        # A non-zero exit that no test accounts for is a failure too.
        if [ $rc -ne 0 ] && [ "$cur_fail" -eq 0 ]; then
            cur_fail=$((cur_fail + 1))
            note "meson test exited with $rc"
        fi
    elif [ $rc -ne 0 ]; then
        cur_fail=$((cur_fail + 1))
        note "meson test exited with $rc and wrote no log"
    else
        note "no tests ran"
    fi
}

build_ok=no

phase_build() {
    begin_phase "build: $BUILD, all suites"
    if configure "$BUILD" "" "${common_opts[@]}" && ninja -C "$BUILD"; then
        build_ok=yes
        run_meson_tests "$BUILD" testlog
    else
        cur_fail=$((cur_fail + 1))
        note "configuring or building $BUILD failed"
    fi
    end_phase build
}

phase_asan() {
    begin_phase "asan: $BUILD_ASAN, all suites with AddressSanitizer and UBSan"
    if configure "$BUILD_ASAN" "" "${common_opts[@]}" -Db_sanitize=address,undefined \
        -Db_lundef=false && ninja -C "$BUILD_ASAN"; then
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            run_meson_tests "$BUILD_ASAN" testlog --timeout-multiplier 3
    else
        cur_fail=$((cur_fail + 1))
        note "configuring or building $BUILD_ASAN failed"
    fi
    end_phase asan
}

phase_tsan() {
    begin_phase "tsan: $BUILD_TSAN, suites ${tsan_suites[*]} with ThreadSanitizer"
    # TSan must see the whole program instrumented; json-c (like GLib,
    # libuv and libevent in the adapter tests) is not.  json-c objects
    # only change hands between threads through libqmp's and the tests'
    # own mutexes, which TSan sees, so no report comes from inside json-c
    # and no suppressions are needed.  Should one ever be, it belongs in
    # a suppressions file limited to json-c's frames, named here with
    # suppressions=FILE.  halt_on_error: the first race fails its test.
    if configure "$BUILD_TSAN" "" "${common_opts[@]}" -Db_sanitize=thread -Db_lundef=false &&
        ninja -C "$BUILD_TSAN"; then
        local -a suites=()
        local s
        for s in "${tsan_suites[@]}"; do
            suites+=(--suite "$s")
        done
        TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
            run_meson_tests "$BUILD_TSAN" testlog "${suites[@]}" --timeout-multiplier 4
    else
        cur_fail=$((cur_fail + 1))
        note "configuring or building $BUILD_TSAN failed"
    fi
    end_phase tsan
}

phase_valgrind() {
    begin_phase "valgrind: $BUILD, suites ${valgrind_suites[*]} under memcheck"
    if [ $build_ok = no ]; then
        # Run on its own: build the directory first.
        if configure "$BUILD" "" "${common_opts[@]}" && ninja -C "$BUILD"; then
            build_ok=yes
        fi
    fi
    if [ $build_ok = no ]; then
        cur_fail=$((cur_fail + 1))
        note "$BUILD is not built"
    elif ! command -v valgrind >/dev/null; then
        cur_fail=$((cur_fail + 1))
        note "valgrind is not installed"
    else
        local -a suites=()
        local s
        for s in "${valgrind_suites[@]}"; do
            suites+=(--suite "$s")
        done
        # valgrind is slow: more time per test.
        run_meson_tests "$BUILD" testlog-memcheck "${suites[@]}" \
            --wrapper "${valgrind_cmd[*]}" --timeout-multiplier 8
    fi
    end_phase valgrind
}

phase_fuzz() {
    begin_phase "fuzz: $BUILD_FUZZ, each target $FUZZ_RUNS runs or ${FUZZ_SECONDS}s"
    if ! configure "$BUILD_FUZZ" clang -Dbuildtype=debugoptimized -Dfuzz=true -Dtests=false \
        -Dtools=false -Dbench=false -Dexamples=false || ! ninja -C "$BUILD_FUZZ"; then
        cur_fail=$((cur_fail + 1))
        note "configuring or building $BUILD_FUZZ failed"
        end_phase fuzz
        return
    fi
    local t exe work art log rc f
    for t in "${fuzz_targets[@]}"; do
        exe="$BUILD_FUZZ/fuzz/fuzz_$t"
        work="$BUILD_FUZZ/fuzz/work/$t"
        art="$BUILD_FUZZ/fuzz/artifacts"
        log="$BUILD_FUZZ/fuzz/fuzz_$t.log"
        # A fresh working corpus: new inputs never land in the source tree.
        rm -rf "$work"
        mkdir -p "$work" "$art"
        echo "fuzz_$t: $FUZZ_RUNS runs or ${FUZZ_SECONDS}s over fuzz/corpus/$t (log: $log)"
        "$exe" -runs="$FUZZ_RUNS" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 -dict="$top/fuzz/qmp.dict" \
            -artifact_prefix="$art/$t-" "$work" "$top/fuzz/corpus/$t" >"$log" 2>&1
        rc=$?
        if [ $rc -eq 0 ]; then
            cur_pass=$((cur_pass + 1))
            grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1
        else
            cur_fail=$((cur_fail + 1))
            note "FAIL: fuzz_$t (exit $rc, log $log)"
            echo "fuzz_$t FAILED (exit $rc); end of $log:"
            tail -n 40 "$log"
            for f in "$art/$t-"*; do
                [ -e "$f" ] && echo "saved input: $f"
            done
        fi
    done
    end_phase fuzz
}

phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(build asan tsan valgrind fuzz)
for p in "${phases[@]}"; do
    case $p in
    build | asan | tsan | valgrind | fuzz) ;;
    *)
        echo "usage: $0 [build|asan|tsan|valgrind|fuzz]..." >&2
        exit 2
        ;;
    esac
done

total_start=$SECONDS
for p in "${phases[@]}"; do
    "phase_$p"
done

banner "summary"
total_pass=0
total_fail=0
for i in "${!phase_names[@]}"; do
    printf '%-9s %4d passed, %3d failed, %3d skipped  (%ds)\n' "${phase_names[$i]}" \
        "${phase_pass[$i]}" "${phase_fail[$i]}" "${phase_skip[$i]}" "${phase_secs[$i]}"
    if [ -n "${phase_notes[$i]}" ]; then
        printf '%s' "${phase_notes[$i]}" | sed 's/^/          /'
    fi
    total_pass=$((total_pass + phase_pass[i]))
    total_fail=$((total_fail + phase_fail[i]))
done
echo "total time $((SECONDS - total_start))s"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
