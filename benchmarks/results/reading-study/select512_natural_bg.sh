#!/bin/bash
# issue 18, fourth study, the ablation: select_all_mix's recipe (P512, rank-16 LoRA on q/k/v/o of the reading
# pass, lr 1e-3, 200 steps) trained on natural BIG-bench episodes only (data.remap=0, data.mustread=0), then
# evaluated on held-out mustread and the demo's natural Lite tasks. Resumable.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=2
.venv/bin/python benchmarks/reading_study.py --rows select_all_natural --columns mustread bbl-natural \
  --json runs/reading/select512_natural.json
