#!/bin/bash
cd /work/main
export OMP_NUM_THREADS=1
.venv/bin/python benchmarks/reading_study.py --no-train --rows outer_mix kv_mix --columns bbl-remap0
