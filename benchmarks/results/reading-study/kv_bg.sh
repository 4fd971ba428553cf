#!/bin/bash
# issue 18: the key/value readout on reading-rewarding episodes (resumable: rerun this script)
cd /work/main
export OMP_NUM_THREADS=1
.venv/bin/hypertune train --resume configs/cpu-small/mtf_kv.yaml run_dir=runs/reading/kv16 data.k=16 downstream.max_input_tokens=192 train.steps=200 eval.every=100 log.progress=false
