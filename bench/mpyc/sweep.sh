#!/usr/bin/env bash
# Runs the whole benchmark series used for RESULTS.md; appends JSON lines to results.jsonl.
set -uo pipefail
cd "$(dirname "$0")"
REPS=${REPS:-2}
run() { for r in $(seq "$REPS"); do echo "# PROG=$1 ./run.sh ${*:2}"; PROG=$1 ./run.sh "${@:2}"; done; }
{
for mode in list np; do
  for n in 10000 100000 1000000; do run mul.py $n --mode $mode; done
done
run cmp.py 10000 --mode list
run cmp.py 10000 --mode np
run cmp.py 100000 --mode np
# cmp list mode at 10^5 skipped: ~100-180 ops/s at 10^4 and superlinear => > 10 min
} 2>&1 | tee -a results.jsonl
