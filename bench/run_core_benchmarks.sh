#!/usr/bin/env bash
# The "Core engine" figures of docs/BENCHMARKS.md, in one go (1-2 hours on 2 busy cores).
# Waits (up to 30 then 15 min) for a quiet CPU (no other process over 100%, all others under half a
# core) before each benchmark, then runs anyway; the benchmarks record how much CPU others took.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/mms-core-bench}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
$PY bench/make_jpegs.py "$OUT/jpegs-12mp-n500" --n 500 --megapixels 12
$PY bench/benchlib.py --wait-quiet 1800
$PY bench/bench_index.py --n 500 --megapixels 12 --rounds 3 --drift-n 50 --data-dir "$OUT" \
    --json-out "$OUT/index.json" 2>&1 | tee "$OUT/index.log"
$PY bench/benchlib.py --wait-quiet "${SECOND_WAIT:-900}"
$PY bench/bench_search.py --sizes 100000 1000000 --dists uniform clustered \
    --json-out "$OUT/search.json" 2>&1 | tee "$OUT/search.log"
$PY bench/bench_search.py --sizes 100000 --dists clustered --spread 2.0 --types ivf hnsw \
    --json-out "$OUT/search-spread2.json" 2>&1 | tee "$OUT/search-spread2.log"
