#!/bin/bash
# issue 18, fourth study: the selection readout keeping every position (P512 >= the examples' tokens, so
# untrained it is in-context learning exactly) with a rank-16 LoRA on all four attention projections of its
# reading pass, trained on the reading mix for the config's 200 steps, then evaluated on held-out mustread.
# Resumable (the training resumes from its checkpoints, the evaluation keeps its records).
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=2
.venv/bin/python benchmarks/reading_study.py --rows select_all_mix --columns mustread --json runs/reading/select512.json
