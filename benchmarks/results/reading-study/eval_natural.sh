#!/bin/bash
cd /work/main
export OMP_NUM_THREADS=1
.venv/bin/python benchmarks/reading_study.py --no-train --rows kv_fresh --columns bbl-natural
