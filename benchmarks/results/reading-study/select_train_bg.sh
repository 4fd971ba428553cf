#!/bin/bash
# issue 18: the selection readout with a rank-8 LoRA on its reading pass, trained on the reading mix
# (configs/cpu-small/mtf_select.yaml, 120 of its 200 steps to fit a session), then evaluated. Resumable.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
.venv/bin/python benchmarks/reading_study.py --rows select_mix --steps 120 --columns mustread --json runs/reading/select-mix.json
