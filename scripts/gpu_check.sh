#!/usr/bin/env bash
# MAM2 network on one CUDA GPU: correctness tests (tests/test_model_cuda*.py: CUDA vs CPU, bf16, each
# speed option against everything off, no host sync per tracked frame), end-to-end fps (the 20 fps
# target at hiera_l 1024 bf16, scripts/gpu_fps.py) with every speed option on, each one off, and all
# off (`--matrix`, one model build), then ms per frame per stage (random weights).
#
#   OUT=/tmp/mam2_gpu BUDGET_S=540 bash scripts/gpu_check.sh
#
# Runs from the repo root with the pure-Python packages the model needs (sam2, hydra,
# omegaconf, antlr4, iopath, portalocker) in .gpu_site/ when they are not installed. Make it
# from a local `python3 install.py` venv (ignored by git; ~3.4 MB):
#   mkdir -p .gpu_site && for p in sam2 hydra omegaconf antlr4 iopath portalocker; do
#     cp -r .venv/lib/python3*/site-packages/$p .gpu_site/; done
# Needs torch (CUDA), numpy, pyyaml, pytest; not OpenImageIO/pyzmq/pymatting (the timings
# go through `python -m mam2_server.bench.model`, not the `mam2` command). Every step has
# a time limit and the whole run stops starting steps after BUDGET_S seconds (the fps matrix comes
# before the per-stage benches, which are skipped first). Writes pytest.log, fps.log, bench.log and
# one JSON per timing run to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/mam2_gpu}
BUDGET_S=${BUDGET_S:-540}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/.gpu_site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu only to try this script out without a GPU
FAILED=()

# step NAME LIMIT_S LOG CMD...: run CMD under min(LIMIT_S, time left), append to LOG
step() {
    local name=$1 limit=$2 log=$3 left=$((BUDGET_S - SECONDS)) rc
    shift 3
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        echo "=== $name: skipped, ${left}s of the budget left" | tee -a "$log"; FAILED+=("$name(skipped)"); return
    fi
    echo "=== $name (limit ${limit}s, t=${SECONDS}s): $*" | tee -a "$log"
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    echo "=== $name rc=$rc (t=${SECONDS}s)" | tee -a "$log"
    ((rc == 0)) || FAILED+=("$name(rc=$rc)")
}

{
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
    $PY -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1
    echo "cc: $(command -v cc || command -v gcc || echo none)"
    $PY -c "import sam2, hydra, omegaconf, iopath; print('sam2 from', sam2.__file__)"
} 2>&1 | tee "$OUT/env.log"

step pytest 200 "$OUT/pytest.log" \
    $PY -m pytest -q -rA -s -m cuda tests/test_model_cuda.py tests/test_model_cuda_speed.py -p no:cacheprovider \
    -W ignore::UserWarning

fps() {  # fps NAME LIMIT_S ARGS...: streaming frames per second, plate up to alpha down
    local name=$1 limit=$2; shift 2
    step "$name" "$limit" "$OUT/fps.log" $PY scripts/gpu_fps.py --device "$DEVICE" --json "$OUT/$name.json" "$@"
}
# all on / no_async_io / no_overlap / no_graphs / no_static_routing / all_off, one model build
fps fps_hiera_l_1024_bf16 240 --config hiera_l --size 1024 --autocast bfloat16 --matrix --warmup 20 --frames 40
fps fps_hiera_t_1024_bf16 60 --config hiera_t --size 1024 --autocast bfloat16

bench() {  # bench NAME LIMIT_S ARGS...
    local name=$1 limit=$2; shift 2
    step "$name" "$limit" "$OUT/bench.log" $PY -m mam2_server.bench.model --device "$DEVICE" --no-counts \
        --frames 5 --json "$OUT/$name.json" "$@"
}
bench hiera_t_f32 45 --config hiera_t --sizes 512,1024
bench hiera_l_f32 60 --config hiera_l --sizes 512,1024
bench hiera_t_bf16 45 --config hiera_t --sizes 512,1024 --autocast bfloat16
bench hiera_l_bf16 60 --config hiera_l --sizes 512,1024 --autocast bfloat16
bench hiera_l_bf16_compile 180 --config hiera_l --sizes 1024 --autocast bfloat16 --compile

grep -h "fps over" "$OUT/fps.log" 2>/dev/null | sed 's/^/=== /'
echo "=== done in ${SECONDS}s; failed: ${FAILED[*]:-none}"
((${#FAILED[@]} == 0))
