#!/bin/bash
# issue 17: the MTF-Few-shot row. Trains paper_study.py's mtf_fewshot stage (exactly as train_all runs it), then
# evaluates it into the shared evaluation directories (the other rows' records are kept, so only MTF-Few-shot
# is computed), one column after the other (side by side on one thread each, 4 mustread records took 6 minutes:
# about 4x slower than one evaluation on both cores).
cd "$(dirname "$0")/../../.."
H=.venv/bin/hypertune
[ -d runs/study/mtf_fewshot/final ] && [ -f runs/study/mtf_fewshot/summary.json ] || $H train --resume configs/cpu-small/mtf_fewshot.yaml run_dir=runs/study/mtf_fewshot \
  hypermodel.max_input_tokens=768 data.k=16 downstream.max_in_context_tokens=960 downstream.max_input_tokens=192 \
  train.steps=100 || exit 1
E="--downstream smollm2-135m-instruct --k 16 --seeds 0 1 --max-examples 32 --max-input-tokens 192 --max-in-context-tokens 960 --quiet"
M="-m Zero-shot:zero-shot -m In-context:in-context -m MTF-Few-shot:mtf-fewshot=runs/study/mtf_fewshot/final"
$H eval $E --collection mustread --out runs/reading/mustread $M > runs/reading/fewshot_mustread.log 2>&1
$H eval $E --collection bigbench --remap 0 --out runs/reading/bbl-remap0 $M > runs/reading/fewshot_remap.log 2>&1
