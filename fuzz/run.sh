#!/bin/sh
# run.sh - builds the libFuzzer targets and runs each for a bounded time.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); TARGETs are image json multipart url
# safetensors idx arch (default: all, one after the other).  The build lives in
# build-fuzz/ (clang, ASan + UBSan, coverage for model/ and server/ too; set
# FUZZ_BUILD_DIR to change it), the seeds are regenerated into
# build-fuzz/seeds/ (fuzz/make-corpus.sh), and each target keeps its growing
# corpus in build-fuzz/corpus/TARGET/ (not committed; later runs start from
# it).  Logs: build-fuzz/fuzz-logs/TARGET.log; crashing inputs:
# build-fuzz/crashes/TARGET/.  Prints one line per target: executions,
# exec/s, coverage (cov: edges, ft: features), corpus size, crashes.  Exits 1
# when any target crashed, leaked, timed out or ran out of memory (UBSan
# reports count: they halt).
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-image json multipart url safetensors idx arch}
build=${FUZZ_BUILD_DIR:-build-fuzz}

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz/run.sh: clang is required" >&2
    exit 1
fi
if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" -Dfuzz=true -Dbuildtype=debugoptimized -Db_lundef=false \
        -Db_sanitize=address,undefined -Dc_args=-fsanitize=fuzzer-no-link >/dev/null
fi
bins=make_corpus
for t in $targets; do bins="$bins fuzz_$t"; done
# shellcheck disable=SC2086
ninja -C "$build" $(for b in $bins; do printf 'fuzz/%s ' "$b"; done) >/dev/null
fuzz/make-corpus.sh "$build/seeds" >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
mkdir -p "$build/fuzz-logs"
crashed=0
printf '%-12s %10s %7s %6s %7s %7s %9s %7s\n' target execs exec/s cov ft corpus bytes crashes
for t in $targets; do
    case $t in
    image) dict=fuzz/png.dict; extra="-max_len=65536" ;;
    json) dict=fuzz/json.dict; extra="-max_len=65536" ;;
    multipart) dict=fuzz/multipart.dict; extra="-max_len=65536" ;;
    url) dict=fuzz/url.dict; extra="-max_len=4096" ;;
    safetensors) dict=fuzz/json.dict; extra="-max_len=16384" ;;
    idx) dict=""; extra="-max_len=16384" ;;
    arch) dict=fuzz/arch.dict; extra="-max_len=8192" ;;
    *) echo "fuzz/run.sh: unknown target $t" >&2; exit 2 ;;
    esac
    corpus="$build/corpus/$t"
    art="$build/crashes/$t"
    log="$build/fuzz-logs/$t.log"
    mkdir -p "$corpus" "$art"
    before=$(ls "$art" | wc -l)
    # shellcheck disable=SC2086
    if "$build/fuzz/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        ${dict:+-dict=$dict} $extra -artifact_prefix="$art/" "$corpus" "$build/seeds/$t" >"$log" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    after=$(ls "$art" | wc -l)
    crashes=$((after - before))
    [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ] && crashes=1
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+.*cov: [0-9]+' "$log" | tail -n 1)
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    files=$(ls "$corpus" | wc -l)
    bytes=$(cat "$corpus"/* 2>/dev/null | wc -c)
    printf '%-12s %10s %7s %6s %7s %7s %9s %7s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" \
        "$files" "$bytes" "$crashes"
    if [ "$crashes" -ne 0 ]; then
        crashed=1
        echo "  $t: exit $rc; see $log and $art/" >&2
        grep -E 'ERROR|runtime error|SUMMARY' "$log" | head -n 5 >&2 || true
    fi
done
exit "$crashed"
