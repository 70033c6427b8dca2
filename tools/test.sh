#!/bin/sh
# test.sh - sets up and runs every test of fmnist (the README's test command;
# .ci/run calls it).
#
#   1. installs the Debian packages the tests need (only the missing ones)
#   2. release build with gcc, then every meson test suite: unit (Check),
#      integration (the real fmnist-serve on a loopback port, driven with
#      curl), browser (headless Chromium via playwright-core), deploy (real
#      nginx in front of two servers), soak (short load + reloads)
#   3. AddressSanitizer + UndefinedBehaviorSanitizer build with gcc: the same again
#   4. clang build: must compile cleanly (warnings are errors)
#   5. the engine built without its AVX2 + FMA clones (-DFM_NO_CLONES): unit tests
#   6. fuzz smoke: each libFuzzer target for 20 s
#
# Build directories: build/ (release), build-asan/, build-clang/, build-generic/.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)

tools/install-deps.sh test
# Browser-test tools from the committed lock file (playwright-core, pinned).
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi

passed=0
failed=0
failures=""

setup() { # DIR ARGS...
    dir="$1"; shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}

# Runs meson test in DIR and adds its counts to the totals.
unit() { # DIR LABEL [SUITE...]
    dir="$1"; label="$2"; shift 2
    suites=""
    for s in "$@"; do suites="$suites --suite $s"; done
    echo "== tests ($label:$*)"
    log="$dir/meson-logs/testlog.txt"
    # shellcheck disable=SC2086
    if meson test -C "$dir" --print-errorlogs --num-processes 2 $suites; then rc=0; else rc=$?; fi
    set -- "$dir" "$label"
    ok=$(grep -c '^ *[0-9]*/[0-9]* .* OK ' "$1/meson-logs/testlog.txt" 2>/dev/null || true)
    summary=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$1/meson-logs/testlog.txt" | tail -n 1)
    bad=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$1/meson-logs/testlog.txt" | tail -n 1)
    to=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$1/meson-logs/testlog.txt" | tail -n 1)
    : "$ok" "$log"
    passed=$((passed + ${summary:-0}))
    failed=$((failed + ${bad:-0} + ${to:-0}))
    if [ "$rc" -ne 0 ]; then
        failures="$failures $2"
        # meson failed without a failing test (build or setup error): count that too
        if [ "${bad:-0}" -eq 0 ] && [ "${to:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
    fi
    return 0
}

echo "== release build (gcc)"
setup build --buildtype=release
ninja -C build
unit build release

echo "== sanitizer build (gcc, ASan + UBSan)"
setup build-asan --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false
ninja -C build-asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 unit build-asan asan+ubsan unit integration

echo "== clang build (compile only)"
if CC=clang setup build-clang --buildtype=debugoptimized && ninja -C build-clang; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    failures="$failures clang-build"
fi

echo "== generic engine build (no AVX2 + FMA clone: what a CPU without them runs)"
setup build-generic --buildtype=release -Dc_args=-DFM_NO_CLONES -Dserver=disabled
ninja -C build-generic
unit build-generic generic unit

echo "== fuzz smoke (libFuzzer, 20 s per target; fuzz/run.sh 600 for the long run)"
if fuzz/run.sh 20; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    failures="$failures fuzz-smoke"
fi

cd "$root"
echo
if [ "$failed" -ne 0 ]; then
    echo "FAILED:$failures"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
