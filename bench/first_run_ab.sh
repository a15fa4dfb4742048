#!/bin/bash
# rclip and the first run of `mmsearch index` (both one-time exports in the run) from two source trees,
# interleaved per round; whole-process wall seconds. Run it through /work/s3/quiet (it takes no lock).
#   git archive b56bc74 | tar -x -C /tmp/base     # a tree to compare with
#   /work/s3/quiet bench/first_run_ab.sh /tmp/base "$PWD" 3
# Needs fake_hub.py's weights in /tmp/perf-hf and rclip's in /tmp/perf-rclip, rclip in /tmp/rclip-venv and
# 200 JPEGs in /tmp/perf-jpegs (see bench/bench_vs_rclip.py). Medians: sort each row's numbers by hand.
# EXTRA: more `mmsearch index` options for both trees, e.g. EXTRA="--ocr off" (words unread, as rclip).
set -u
A=$1 B=$2 ROUNDS=${3:-3} WORK=${WORK:-/tmp/first-run-ab}
export HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/perf-hf RCLIP_DATADIR=/tmp/perf-rclip TRANSFORMERS_OFFLINE=1
mkdir -p "$WORK"
for r in $(seq 1 "$ROUNDS"); do
  rm -f /tmp/perf-rclip/db.sqlite3
  s=$(date +%s.%N); (cd /tmp/perf-jpegs && /tmp/rclip-venv/bin/rclip "a cat" --top 1 >/dev/null 2>&1); e=$(date +%s.%N)
  echo "round $r rclip $(echo "$e - $s" | bc) load $(cut -d' ' -f1 /proc/loadavg)"
  for tree in "$A" "$B"; do
    n=$(basename "$tree"); rm -rf "$WORK/db-$n"
    s=$(date +%s.%N)
    PYTHONPATH=$tree /work/main/.venv/bin/mmsearch index /tmp/perf-jpegs --db "$WORK/db-$n" \
      --model ViT-B-32-256:datacomp_s34b_b86k --precision onnx-int8 ${EXTRA:-} > "$WORK/$n-$r.log" 2>&1
    e=$(date +%s.%N)
    echo "round $r $n $(echo "$e - $s" | bc) load $(cut -d' ' -f1 /proc/loadavg) :: $(tail -1 "$WORK/$n-$r.log" | cut -c1-200)"
  done
done
