#!/bin/bash
# issue 18: the fourth study's recipe (select P512, LoRA 16 qkvo, reading mix) on half the schedule, 100
# steps, the length that fits the demo's 30 minutes; then held-out mustread and natural Lite. Resumable.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=2
.venv/bin/python benchmarks/reading_study.py --rows select_all_mix_100 --columns mustread bbl-natural --json runs/reading/select512_100.json
