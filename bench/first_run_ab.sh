#!/bin/bash
# A first run (fresh index: exports included) of two checkouts side by side, rounds interleaved: wall
# seconds of the whole `mmsearch index` command and the run's own summary (docs/BENCHMARKS.md
# "Towers built without their random start"). OLD is a worktree of the commit before the change:
#   git worktree add /tmp/ab-old e2e16b9; bench/make_jpegs.py /tmp/perf-jpegs --n 200 --megapixels 0.786432
#   fake hub as in bench/bench_tower_build.py; then: bash bench/first_run_ab.sh
export HF_HUB_OFFLINE=1 HF_HUB_CACHE=${HF_HUB_CACHE:-/tmp/perf-hf}
NEWPY=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python  # one venv for both: the checkout comes first on PYTHONPATH
for r in 1 2 3; do
  for v in old new; do
    rm -rf /tmp/ab-db-$v
    if [ $v = old ]; then P=${OLD:-/tmp/ab-old}; else P=${NEW:-$(cd "$(dirname "$0")/.." && pwd)}; fi
    s=$(date +%s.%N)
    (cd $P && PYTHONPATH=$P ${PYTHON:-$NEWPY} -c "from cli.app import main; main()" index /tmp/perf-jpegs --db /tmp/ab-db-$v --model ViT-B-32-256:datacomp_s34b_b86k --ocr off > /tmp/ab-$v-$r.log 2>&1)
    e=$(date +%s.%N)
    echo "$v round $r: $(echo "$e - $s" | bc) s; $(grep -o 'in [0-9.]* s ([^;]*' /tmp/ab-$v-$r.log | head -1)"
  done
done
