#!/bin/bash
# issue 17: the In-context cells of remapped BIG-bench Lite (resumable: done records are skipped)
cd /work/main
export OMP_NUM_THREADS=2
.venv/bin/hypertune eval --downstream smollm2-135m-instruct --collection bigbench --remap 0 --k 16 --seeds 0 1 --max-examples 32 --max-input-tokens 192 --max-in-context-tokens 960 --quiet --out runs/reading/bbl-remap0 -m In-context:in-context
