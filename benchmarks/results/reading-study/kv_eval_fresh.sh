#!/bin/bash
cd /work/main
export OMP_NUM_THREADS=1
.venv/bin/hypertune eval --downstream smollm2-135m-instruct --collection mustread --k 16 --seeds 0 1 --max-examples 32 --max-input-tokens 192 --max-in-context-tokens 960 --quiet --out runs/reading/mustread -m "HyperKV (untrained):hyper=runs/reading/kv16_fresh"
