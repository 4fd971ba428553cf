#!/bin/bash
# issue 18: the selection readout with twice the kept tokens (P128, 6 tokens before each separator), untrained,
# on held-out mustread: the second point of the accuracy-against-P curve (resumable)
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
.venv/bin/python benchmarks/reading_study.py --no-train --rows select128 --columns mustread --json runs/reading/select128-mustread.json
.venv/bin/python benchmarks/reading_study.py --no-train --rows select128 --columns bbl-natural --json runs/reading/select128-lite.json
