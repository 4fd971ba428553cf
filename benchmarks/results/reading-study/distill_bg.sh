#!/bin/bash
# issue 18: context distillation (train.distill=0.5) for the kv and outer readouts, trained side by side
# (one thread each) for half the steps of kv_mix / outer_mix (a distilled step costs about twice a plain
# one: the teacher reads the examples in context), so the same CPU time; then evaluated on held-out mustread and the demo's natural Lite tasks. Resumable: rerun.
cd /work/main
export OMP_NUM_THREADS=1
PY=.venv/bin/python
$PY benchmarks/reading_study.py --rows kv_distill --steps 100 --columns --json runs/reading/kv_distill.json > runs/reading/kv_distill.log 2>&1 &
$PY benchmarks/reading_study.py --rows outer_distill --steps 125 --columns --json runs/reading/outer_distill.json > runs/reading/outer_distill.log 2>&1 &
wait
$PY benchmarks/reading_study.py --no-train --rows kv_distill outer_distill --columns mustread --json runs/reading/distill_mustread.json > runs/reading/eval_distill_mustread.log 2>&1 &
$PY benchmarks/reading_study.py --no-train --rows kv_distill outer_distill --columns bbl-natural --json runs/reading/distill_natural.json > runs/reading/eval_distill_natural.log 2>&1 &
wait
