#!/bin/bash
# A steady re-index (the index's exports kept, its database and vectors dropped) of the same folder by
# `mmsearch index` from two source trees, interleaved per round; whole-process wall seconds.
#   git archive HEAD~1 | tar -x -C /tmp/base      # a tree to compare with
#   bash bench/steady_ab.sh /tmp/base "$PWD" 5
# Needs fake_hub.py's weights in /tmp/perf-hf and 200 JPEGs in /tmp/perf-jpegs (see bench/bench_vs_rclip.py).
# EXTRA: more `mmsearch index` options for both trees (default --ocr off). Medians: sort each row by hand.
set -u
A=$1 B=$2 ROUNDS=${3:-5} WORK=${WORK:-/tmp/steady-ab}
export HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/perf-hf TRANSFORMERS_OFFLINE=1
mkdir -p "$WORK"
run() {  # tree db
  PYTHONPATH=$1 /work/main/.venv/bin/mmsearch index /tmp/perf-jpegs --db "$2" \
    --model ViT-B-32-256:datacomp_s34b_b86k --precision onnx-int8 ${EXTRA:---ocr off} > "$WORK/last.log" 2>&1
}
for tree in "$A" "$B"; do  # each tree's exports, made once and kept
  n=$(basename "$tree"); rm -rf "$WORK/db-$n"; run "$tree" "$WORK/db-$n"
done
for r in $(seq 1 "$ROUNDS"); do
  for tree in "$A" "$B"; do
    n=$(basename "$tree"); (cd "$WORK/db-$n" && rm -f mmsearch.db* vectors*)
    s=$(date +%s.%N); run "$tree" "$WORK/db-$n"; e=$(date +%s.%N)
    echo "round $r $n $(echo "$e - $s" | bc) load $(cut -d' ' -f1 /proc/loadavg) :: $(tail -1 "$WORK/last.log" | cut -c1-120)"
  done
done
