#!/bin/bash
# issue 17: the HyperLoRA/HyperPrefix (no CACLM) rows on remapped Lite, which had 2 of its 6 tasks. Trains
# paper_study.py's two stages exactly (as train_all runs them; their earlier runs were gone with their machine),
# then evaluates only those two rows into the shared directory (every other row's records are kept).
# Both threads: beside another job, even at one thread and `nice`, it slowed that job's steps 2.8x. Resumable.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=2
H=.venv/bin/hypertune
C="hypermodel.max_input_tokens=768 data.k=16 downstream.max_in_context_tokens=960 downstream.max_input_tokens=192"
[ -f runs/study/hyperlora_nocaclm/summary.json ] || $H train --resume configs/cpu-small/mtf_hyper.yaml \
  run_dir=runs/study/hyperlora_nocaclm $C hypermodel.init=null train.steps=100 || exit 1
[ -f runs/study/hyperprefix_nocaclm/summary.json ] || $H train --resume configs/cpu-small/mtf_hyper.yaml \
  run_dir=runs/study/hyperprefix_nocaclm $C hypermodel.init=null hypermodel.target=prefix \
  'hypermodel.options={prefix_len: 16}' train.steps=100 || exit 1
$H eval --downstream smollm2-135m-instruct --k 16 --seeds 0 1 --max-examples 32 --max-input-tokens 192 \
  --max-in-context-tokens 960 --quiet --collection bigbench --remap 0 --out runs/reading/bbl-remap0 \
  -m 'HyperLoRA (no CACLM):hyper=runs/study/hyperlora_nocaclm/final' \
  -m 'HyperPrefix (no CACLM):hyper=runs/study/hyperprefix_nocaclm/final'
