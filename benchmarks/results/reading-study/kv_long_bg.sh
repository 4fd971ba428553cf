#!/bin/bash
# issue 18, next step: the kv readout recipe of mtf_kv.yaml trained 5x longer (resumable: rerun this script)
cd /work/main
export OMP_NUM_THREADS=1
.venv/bin/hypertune train --resume configs/cpu-small/mtf_kv.yaml run_dir=runs/reading/kv16_long data.k=16 downstream.max_input_tokens=192 train.steps=1000 eval.every=100 log.progress=false
