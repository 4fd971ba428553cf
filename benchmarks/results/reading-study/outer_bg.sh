#!/bin/bash
# issue 18: the outer-product LoRA readout on reading-rewarding episodes (resumable: rerun this script)
cd /work/main
export OMP_NUM_THREADS=1
.venv/bin/hypertune train --resume configs/cpu-small/mtf_outer.yaml run_dir=runs/reading/outer8 data.k=16 downstream.max_input_tokens=192 train.steps=250 eval.every=125 log.progress=false
