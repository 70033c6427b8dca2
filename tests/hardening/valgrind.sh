#!/bin/sh
# valgrind.sh - fmnist-serve under valgrind memcheck through the integration
# suite (tests/integration/test_server.py) and the bad-input corpus
# (tests/hardening/test_bad_inputs.py, one pass).
#
# Usage: tests/hardening/valgrind.sh [BUILD_DIR]     (default: build-hard)
#
# Every server the tests start runs as
#   valgrind --leak-check=full --error-exitcode=99
#            --errors-for-leak-kinds=definite,indirect --log-file=...
# so a leak (definite or indirect) or an invalid read/write makes the server
# exit 99 after SIGTERM, which fails the test's "clean exit" check; the logs
# are summed up at the end.  Takes a few minutes (memcheck is ~20-50x
# slower); not part of `meson test`.  Exit status: 0 when both suites pass
# and every log reports 0 errors.
set -u
build=${1:-build-hard}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
logs=$(mktemp -d /tmp/fmnist-valgrind.XXXXXX)
export FMNIST_SERVE="$root/$build/server/fmnist-serve"
export FMNIST_WEIGHTS_DIR="${FMNIST_WEIGHTS_DIR:-$root/weights}"
export FMNIST_SERVE_WRAPPER="valgrind --leak-check=full --error-exitcode=99 --errors-for-leak-kinds=definite,indirect --log-file=$logs/vg.%p.log"
export PYTHONDONTWRITEBYTECODE=1
status=0
start=$(date +%s)
echo "== integration (test_server.py) under memcheck"
python3 "$root/tests/integration/test_server.py" || status=1
echo "== bad-input corpus (test_bad_inputs.py, 1 pass) under memcheck"
HARDENING_PASSES=1 python3 "$here/test_bad_inputs.py" || status=1
echo "== memcheck logs ($logs)"
for f in "$logs"/vg.*.log; do
    errs=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$f" | tail -1)
    lost=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$f" | tail -1)
    indirect=$(sed -n 's/.*indirectly lost: \([0-9,]*\) bytes.*/\1/p' "$f" | tail -1)
    echo "$(basename "$f"): errors ${errs:-?}, definitely lost ${lost:-0} bytes, indirectly lost ${indirect:-0} bytes"
    [ "${errs:-1}" = 0 ] || status=1
done
echo "valgrind.sh: $(($(date +%s) - start)) s, $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
