#!/usr/bin/env bash
# The GPU checks, as one command for a lent machine (the device tool runs it in the repository's root; results go
# to $OUT). That machine has torch, triton and transformers but not pydantic and its helpers: carry them as
# wheels in .whl/ (see the device tool's README: pydantic, pydantic_core, pydantic-settings, python-dotenv,
# annotated-types and typing-inspection, the versions installed here, for CPython 3.12 manylinux x86_64), and
# SmolLM2's config and tokenizer files in .dev/smol/ (the de-quantised folder `ragsvc` caches on first load):
#   mkdir -p .dev/smol && cp <data dir>/models/SmolLM2-*/{*.json,*.jinja} .dev/smol/
# Both folders git-ignored (.git/info/exclude) and named in the call's carry. The whole script ran in 275 s on an
# H200 before profile_steps.py was added to its end (about 60 s more).
# Each step has its own time limit, the most important first; the JSON of a cut benchmark keeps its finished levels.
set -o pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-eval/results}
SCRATCH=$(mktemp -d)  # the wheels' install, the random models and their quantised cache
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SCRATCH/site" .whl/*.whl || exit 1
  export PYTHONPATH="$SCRATCH/site:$PWD"
fi
bench() { python3 -W ignore -c 'from ragsvc.cli import main; main()' bench "$@"; }
echo "== gpu tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider -n 8 tests/serving/test_cuda_engine.py \
  tests/serving/test_triton_kernel.py tests/serving/test_triton_quant.py tests/serving/test_triton_fused.py 2>&1 | tee "$OUT/gpu-tests.log" | tail -15
timeout 40 python3 eval/gpu/random_models.py .dev/smol "$SCRATCH/models"
echo "== quantised linears"
timeout 45 bash -c "$(declare -f bench); bench quant-kernels --model qwen2.5-1.5b --tokens 1,8,32 --json $OUT/quant-kernels.json" 2>&1 | grep -v INFO
serve() {  # name, time limit, then bench serving's own options
  local name=$1 limit=$2; shift 2
  echo "== serving, $name"
  timeout "$limit" bash -c "$(declare -f bench); bench serving --device cuda --max-output 128 --prefix-trials 1 --threads 4 --cache-dir $SCRATCH/qcache --json $OUT/serving-$name.json $*" 2>&1 | grep -E '^\{|rror|captured'
}
# decode steps replayed as CUDA graphs (the default) against the same engine launching kernels one by one
serve smol-bf16 140 --model "$SCRATCH/models/smol" --systems ragsvc,hf_sequential,hf_batch
serve smol-bf16-no-graphs 70 --model "$SCRATCH/models/smol" --systems ragsvc --concurrency 1,32 --no-cuda-graphs
serve qwen-q4 90 --model "$SCRATCH/models/qwen" --weights q4 --systems ragsvc --concurrency 1,8
echo "== where a step's time goes"
timeout 90 python3 -W ignore eval/gpu/profile_steps.py "$SCRATCH/models" "$OUT" 2>&1 | grep -v "INFO\|USDT" | tail -18
