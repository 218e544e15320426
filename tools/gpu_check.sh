#!/usr/bin/env bash
# The CUDA check, run once on a GPU machine (CI has none). It installs NL Studio into that
# machine's own Python (whatever CUDA torch it carries), runs the CUDA tests, trains through
# the command line and torchrun (NCCL) on the GPU, and runs the level and GPU benchmarks there.
#
#   tools/gpu_check.sh [LOG_DIR]
#   SECTIONS="tests graphs" tools/gpu_check.sh     # only some of: tests torchrun graphs levels gpu suite
#
# Offline machines: put wheels of the missing packages (pydantic and, for the benchmark's
# peer, titans-pytorch with its dependencies; for fla's kernels fla-core,
# flash-linear-attention and einops) in .whl/ first; they are installed from there.
set -u
cd "$(dirname "$0")/.."
LOG=${1:-gpu-check}
mkdir -p "$LOG"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/nlstudio-site .whl/*.whl && export PYTHONPATH=/tmp/nlstudio-site
fi
$PY -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$LOG/install.log" 2>&1 \
    || { echo "install failed"; tail -20 "$LOG/install.log"; exit 1; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, nlstudio; print('torch', torch.__version__, '| nlstudio', nlstudio.__version__, '|', torch.cuda.get_device_name(0))"

status=0
SECTIONS=${SECTIONS:-tests torchrun graphs levels gpu suite}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

if want tests; then
echo "== CUDA tests"
timeout 240 $PY -m pytest -q -p no:cacheprovider -p no:randomly \
    tests/models/test_cuda_levels.py tests/core/test_cuda_training.py \
    tests/models/test_assemble.py tests/models/test_fla_kernels.py 2>&1 | tee "$LOG/cuda_tests.log" | tail -15
[ "${PIPESTATUS[0]}" = 0 ] || status=1
fi

if want torchrun; then
echo "== torchrun, 1 process, NCCL"
timeout 120 $PY -m torch.distributed.run --nproc_per_node=1 -m nlstudio train \
    resources/presets/nsam_kv_stream.nlproj --steps 20 --out /tmp/ddp-run > "$LOG/torchrun.log" 2>&1
rc=$?; tail -3 "$LOG/torchrun.log"; echo "torchrun exit $rc"; [ $rc = 0 ] || status=1
timeout 120 $PY -m nlstudio eval /tmp/ddp-run --device cuda 2>&1 | tail -4
fi

if want graphs; then
echo "== training steps: CUDA graphs vs eager"
timeout 240 $PY bench/cuda_graphs.py 2>&1 | tee "$LOG/bench_graphs.log"
fi

if want levels; then
echo "== level benchmark on the GPU"
timeout 200 $PY bench/levels.py --device cuda --only levels transformer nsam 2>&1 | tee "$LOG/bench_levels.log"
timeout 150 $PY bench/levels.py --device cuda --only titans 2>&1 | tee "$LOG/bench_titans.log"
fi

if want gpu; then
echo "== GPU benchmark: delta / linear_attention vs fla's kernels, nsam vs a same-size transformer"
$PY -c "from nlstudio.models.levels.fla_kernels import fla_unavailable as f; print('fla:', f() or 'usable')"
timeout 300 $PY bench/gpu.py 2>&1 | tee "$LOG/bench_gpu.log"
fi

if want suite; then
echo "== the models and core suites under this machine's torch (CUDA visible)"
timeout 200 $PY -m pytest -q -p no:cacheprovider tests/models tests/core -m "not slow" \
    2>&1 | tee "$LOG/suite.log" | tail -25
[ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
exit $status
