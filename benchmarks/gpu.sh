#!/usr/bin/env bash
# The GPU checks in one command, for a CUDA machine that may have no network:
#
#     bash benchmarks/gpu.sh [PACKAGES_DIR] [OUT_DIR]
#
# 1. PACKAGES_DIR (optional) may hold wheels, installed first with pip --no-index (e.g. transformers at the pin in
#    envs/requirements.txt), and a mamba-ssm sdist (mamba_ssm-*.tar.gz), built in the background for this GPU's
#    architecture only (its own setup.py builds seven architectures, which takes far longer). causal-conv1d is
#    not needed: without it transformers' Mamba-2 mixer runs its depthwise convolution with torch's conv1d.
# 2. tests/test_gpu.py (the CUDA path against the CPU), while the build runs.
# 3. Once mamba-ssm imports: tests/test_gpu.py again, now on mamba-ssm's Triton scan, then
#    `benchmarks/prefill.py --save --explain --profile` (real widths, bfloat16, eager: every kernel launched from
#    Python; the profile of one reduced prefill shows where its time goes) and
#    `benchmarks/prefill.py --save --cuda-graphs` (every prefill captured in a CUDA graph and replayed). If the build
#    failed or ran past BUILD_TIMEOUT seconds (default 280), the benchmarks run on the reference scan, and their
#    first lines say so.
#
# Logs and the benchmark records (benchmarks/records/prefill_gpu.json, prefill_gpu_graphs.json) are also copied to
# OUT_DIR (default: logs/gpu). Extra arguments for prefill.py: PREFILL_ARGS="--repeats 5"; LONG_VISION=32768 also
# runs it (unsaved, CUDA graphs) at that many vision tokens. Needs python3 with torch (CUDA) and pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
PACKAGES=${1:-}
OUT_DIR=${2:-logs/gpu}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-280}
mkdir -p "$OUT_DIR"
SITE=$(mktemp -d)
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
stamp() { echo "== $(( $(date +%s) - start )) s: $*"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || exit 1
if [ -n "$PACKAGES" ] && compgen -G "$PACKAGES/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$PACKAGES"/*.whl || exit 1
fi
python3 -c "import torch, transformers; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
'transformers', transformers.__version__, torch.cuda.get_device_name())" || exit 1

build_pid=
sdist=$(ls "$PACKAGES"/mamba_ssm-*.tar.gz 2>/dev/null | head -n 1)
if [ -n "$sdist" ]; then
    arch=$(python3 -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability())))")
    src=$(mktemp -d)
    tar xzf "$sdist" -C "$src"
    setup=$(ls "$src"/*/setup.py)
    # One architecture, this GPU's, in place of the list setup.py builds.
    python3 - "$setup" "$arch" <<'EOF'
import sys
path, arch = sys.argv[1], sys.argv[2]
text = open(path).read()
anchor = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
assert anchor in text, "mamba-ssm's setup.py changed: no place to set the architecture"
only = f'    cc_flag = [f for f in cc_flag if f != "-gencode" and not f.startswith("arch=")] + ["-gencode", "arch=compute_{arch},code=sm_{arch}"]\n'
open(path, "w").write(text.replace(anchor, only + anchor, 1))
EOF
    stamp "building mamba-ssm for sm_$arch in the background (log: $OUT_DIR/mamba_build.log)"
    build_log="$src/build.log"
    ( cd "$(dirname "$setup")" && MAMBA_FORCE_BUILD=TRUE MAX_JOBS=$(nproc) timeout "$BUILD_TIMEOUT" \
        python3 -m pip install --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" . \
        >"$build_log" 2>&1; echo "exit $?" >>"$build_log" ) &
    build_pid=$!
fi

stamp "tests/test_gpu.py before mamba-ssm"
timeout 300 python3 -m pytest -q -p no:cacheprovider --noconftest -rs tests/test_gpu.py 2>&1 | tee "$OUT_DIR/test_gpu_reference.log"
if [ -n "$build_pid" ]; then
    wait "$build_pid"
    cp "$build_log" "$OUT_DIR/mamba_build.log"
    stamp "mamba-ssm build: $(tail -n 1 "$build_log")"
    if python3 -c "import mamba_ssm.ops.triton.ssd_combined" 2>"$OUT_DIR/mamba_import.log"; then
        stamp "tests/test_gpu.py on mamba-ssm's kernels"
        timeout 200 python3 -m pytest -q -p no:cacheprovider --noconftest -rs tests/test_gpu.py 2>&1 | tee "$OUT_DIR/test_gpu_kernels.log"
    else
        stamp "mamba-ssm does not import: $(tail -n 1 "$OUT_DIR/mamba_import.log")"
    fi
fi
stamp "benchmarks/prefill.py, eager"
# shellcheck disable=SC2086
timeout 300 python3 benchmarks/prefill.py --save --explain --profile ${PREFILL_ARGS:-} 2>&1 | tee "$OUT_DIR/prefill_gpu.log"
stamp "benchmarks/prefill.py, CUDA graphs"
# shellcheck disable=SC2086
timeout 300 python3 benchmarks/prefill.py --save --cuda-graphs ${PREFILL_ARGS:-} 2>&1 | tee "$OUT_DIR/prefill_gpu_graphs.log"
cp benchmarks/records/prefill_gpu.json benchmarks/records/prefill_gpu_graphs.json "$OUT_DIR/" 2>/dev/null
if [ -n "${LONG_VISION:-}" ]; then  # a longer video too (printed, not saved): how the ratios move with N
    stamp "benchmarks/prefill.py --cuda-graphs --vision $LONG_VISION"
    timeout 300 python3 benchmarks/prefill.py --cuda-graphs --vision "$LONG_VISION" 2>&1 | tee "$OUT_DIR/prefill_gpu_long.log"
fi
stamp "done"
