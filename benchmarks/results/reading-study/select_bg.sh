#!/bin/bash
# issue 18: the key/value selection readout (untrained), on held-out mustread, remapped and natural Lite
# (resumable: done records are skipped). Records of the other rows were restored into runs/reading/* from
# benchmarks/results/reading-study/*.records.jsonl first.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
.venv/bin/python benchmarks/reading_study.py --no-train --rows select64 select32 --columns mustread --json runs/reading/select-mustread.json
.venv/bin/python benchmarks/reading_study.py --no-train --rows select64 --columns bbl-natural bbl-remap0 --json runs/reading/select-lite.json
