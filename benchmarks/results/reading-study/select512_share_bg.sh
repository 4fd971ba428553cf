#!/bin/bash
# issue 18, natural Lite: the default recipe (select P512, LoRA 16 qkvo, reading mix, 100 steps) with the
# shots of every fixed-label training episode drawn at a random label share (data.label_share=1.0), then
# natural Lite and held-out mustread. Resumable.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=2
.venv/bin/python benchmarks/reading_study.py --rows select_all_share --columns bbl-natural mustread --json runs/reading/select512_share.json
