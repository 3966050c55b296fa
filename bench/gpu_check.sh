#!/usr/bin/env bash
# The CUDA paths in one run: build llama-cpp-python with CUDA, run tests/test_gpu.py one test per
# process, measure CUDA against the CPU, and write one JSON object (gpu_check.json) into OUTDIR.
#
#   bench/gpu_check.sh [options] [OUTDIR]        OUTDIR defaults to $OUT
#
#   --wheel FILE      install this llama-cpp-python CUDA wheel instead of building one
#   --sdist FILE      build from this llama-cpp-python 0.3.36 source archive (no index needed)
#   --venv DIR        use (or create) this virtual environment; default: a new one under the work folder
#   --wheelhouse DIR  install the project's dependencies from this folder only (no index)
#   --cpu-only        no CUDA build; every step runs, GPU sides are recorded as skipped
#   --quick           small models and few tokens (for checking the script itself)
#
# Environment: CUDA_ARCH (default: native), CMAKE_ARGS (added to the CUDA flags), WORK (work folder).
# A built wheel is kept in OUTDIR/wheels so that the next run can pass it with --wheel.
# Each step runs in its own process with a time limit; a step that fails or crashes is recorded with
# its exit status and the last lines of its log (OUTDIR/logs), and the run goes on.
set -uo pipefail

CPU_ONLY=0 QUICK=0 WHEEL="" SDIST="" VENV="" WHEELHOUSE="" OUTDIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-only) CPU_ONLY=1 ;;
        --quick) QUICK=1 ;;
        --wheel) WHEEL=$(realpath "$2"); shift ;;
        --sdist) SDIST=$(realpath "$2"); shift ;;
        --venv) VENV=$2; shift ;;
        --wheelhouse) WHEELHOUSE=$(realpath "$2"); shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) OUTDIR=$1 ;;
    esac
    shift
done
OUTDIR=${OUTDIR:-${OUT:-}}
if [ -z "$OUTDIR" ]; then
    echo "gpu_check: give an output folder (or set \$OUT)" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUTDIR/parts" "$OUTDIR/logs" "$OUTDIR/wheels"
OUTDIR=$(realpath "$OUTDIR")
WORK=${WORK:-$(mktemp -d /tmp/talesmith-gpu.XXXXXX)}
mkdir -p "$WORK"
VENV=${VENV:-$WORK/venv}
PY="$VENV/bin/python"
MEASURE="$ROOT/bench/gpu_measure.py"
cd "$ROOT" || exit 2
export TALESMITH_LOCK="$WORK/models.lock" TALESMITH_CACHE="$WORK/cache" PYTHONFAULTHANDLER=1
started=$(date +%s)

say() { echo "[gpu_check $(( $(date +%s) - started ))s] $*" >&2; }

# step KEY SECONDS COMMAND...: run COMMAND with a time limit; its last stdout line (JSON) becomes KEY.
step() {
    local key=$1 limit=$2; shift 2
    local log="$OUTDIR/logs/$key.log" out="$OUTDIR/logs/$key.out"
    say "$key"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@" >"$out" 2>"$log"  # functions too (export -f)
    local rc=$?
    "$PY" "$MEASURE" part "$key" "$rc" "$(( $(date +%s) - t0 ))" "$out" "$log" >"$OUTDIR/parts/$key.json"
    [ $rc -eq 0 ] || say "$key failed (exit status $rc), see $log"
    return $rc
}

# note KEY JSON: record a value without running anything (a skipped measurement).
note() { printf '{"key": "%s", "value": %s}\n' "$1" "$2" >"$OUTDIR/parts/$1.json"; }

gpu_side() {  # gpu_side KEY SECONDS COMMAND...: a GPU measurement, skipped with --cpu-only
    if [ $CPU_ONLY -eq 1 ]; then note "$1" '{"skipped": "--cpu-only"}'; else step "$@"; fi
}

# ---- 1. the environment: project with its extras, llama-cpp-python with CUDA ----------------------
install_project() {
    [ -x "$PY" ] || python3 -m venv "$VENV" || return 1
    "$PY" -c "import talesmith, torch, onnxruntime, pytest" 2>/dev/null && return 0
    local index=()
    [ -n "$WHEELHOUSE" ] && index=(--no-index --find-links "$WHEELHOUSE")
    "$PY" -m pip install --quiet "${index[@]}" -e ".[test,convert,onnx]"
}

build_llama_cpp() {
    local flags="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-native} -DGGML_CUDA_FA=OFF ${CMAKE_ARGS:-}"
    local source="llama-cpp-python==0.3.36"
    [ -n "$SDIST" ] && source=$SDIST
    rm -f "$OUTDIR"/wheels/llama_cpp_python-*.whl
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$PY" -m pip wheel --no-deps --no-cache-dir -w "$OUTDIR/wheels" "$source" || return 1
    WHEEL=$(ls "$OUTDIR"/wheels/llama_cpp_python-*.whl | head -1)
}

setup() {
    local t0=$(date +%s) built=0
    install_project || { echo '{"error": "could not install the project with its extras"}'; return 1; }
    if [ $CPU_ONLY -eq 0 ]; then
        if [ -z "$WHEEL" ]; then build_llama_cpp || { echo '{"error": "CUDA build failed"}'; return 1; }; built=1; fi
        "$PY" -m pip install --quiet --no-deps --force-reinstall "$WHEEL" || return 1
    fi
    local t1=$(date +%s)
    "$PY" - "$built" "$(( t1 - t0 ))" "$WHEEL" <<'EOF'
import json, subprocess, sys
import llama_cpp
info = {"built_cuda_wheel": sys.argv[1] == "1", "setup_seconds": int(sys.argv[2]), "wheel": sys.argv[3] or None,
        "llama_cpp_python": llama_cpp.__version__, "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload())}
try:
    info["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout.strip() or None
except OSError:
    info["gpu"] = None
print(json.dumps(info))
EOF
}

# ---- 2. the GPU tests, one process each, so that a crash names its test ----------------------------
gpu_tests() {
    local ids results=()
    ids=$("$PY" -m pytest --collect-only -q -p no:cacheprovider tests/test_gpu.py 2>/dev/null | grep '::')
    for id in $ids; do
        local name=${id##*::} log="$OUTDIR/logs/test-${id##*::}.log" t0=$(date +%s)
        say "test $name"
        timeout --kill-after=10 600 "$PY" -X faulthandler -m pytest -p no:cacheprovider -q -rs "$id" >"$log" 2>&1
        local rc=$?
        results+=("$name" "$rc" "$(( $(date +%s) - t0 ))" "$log")
    done
    "$PY" - "${results[@]}" <<'EOF'
import json, re, sys
args, out = sys.argv[1:], {}
for name, rc, seconds, log in zip(*[iter(args)] * 4):
    text = open(log, errors="replace").read()
    rc = int(rc)
    outcome = next((w for w in ("failed", "passed", "skipped", "error") if re.search(rf"\b1 {w}\b", text)), None)
    crashed = rc > 128 or rc < 0 or "Fatal Python error" in text
    entry = {"outcome": outcome, "exit_status": rc, "seconds": int(seconds), "crashed": crashed}
    if crashed:
        entry["crash"] = [l for l in text.splitlines() if "Fatal Python error" in l or l.startswith(("  File", "Thread", "Current thread"))][:12]
        entry["crashed_after_passing"] = outcome == "passed"
    if outcome == "skipped":
        entry["reason"] = next((l.split("] ", 1)[-1] for l in text.splitlines() if l.startswith("SKIPPED")), None)
    out[name] = entry
print(json.dumps(out))
EOF
}

# Load the bundled model offloaded, generate, and exit without closing it: a crash at exit shows here.
exit_probe() {
    "$PY" -X faulthandler - "$1" <<'EOF'
import json, sys
from talesmith.runtime.engine.generate import collect, stream
from talesmith.runtime.engine.llama import LlamaCppBackend
from talesmith.runtime.models.resolve import bundled_model_path
from talesmith.runtime.settings import SamplingSettings
backend = LlamaCppBackend(bundled_model_path(), n_ctx=256, gpu_layers=int(sys.argv[1]))
result = collect(stream(backend, backend.tokenize("Once upon a time"), SamplingSettings(temperature=0, max_new_tokens=8)))
print(json.dumps({"gpu_layers": int(sys.argv[1]), "tokens": len(result.tokens)}))
EOF
}

export -f say setup install_project build_llama_cpp gpu_tests exit_probe
export CPU_ONLY QUICK WHEEL SDIST VENV WHEELHOUSE OUTDIR PY MEASURE ROOT WORK started

# ---- 3. the measurements -------------------------------------------------------------------------------
if [ $QUICK -eq 1 ]; then
    SHAPE=(--layers 2 --hidden 256 --inter 512 --heads 4 --kv-heads 2); ONNX_SHAPE=("${SHAPE[@]}")
    TOKENS=16 PROMPT=400 ROWS=8
else
    SHAPE=(--layers 22 --hidden 2048 --inter 5632 --heads 32 --kv-heads 4)      # ~1B, TinyLlama's shape
    ONNX_SHAPE=(--layers 12 --hidden 1024 --inter 2816 --heads 16 --kv-heads 4)  # ~0.2B: exported twice (fp16)
    TOKENS=128 PROMPT=2000 ROWS=32
fi

step setup 1800 setup || { say "setup failed: nothing else can run"; }
if [ -f "$OUTDIR/parts/setup.json" ] && ! grep -q '"error"' "$OUTDIR/parts/setup.json"; then
    step gpu_tests 1500 gpu_tests
    step exit_probe.cpu 300 exit_probe 0
    gpu_side exit_probe.gpu 300 exit_probe -1

    BUNDLED=$("$PY" -c "from talesmith.runtime.models.resolve import bundled_model_path; print(bundled_model_path())")
    step decode_bundled.cpu 600 "$PY" "$MEASURE" decode "$BUNDLED" --tokens $TOKENS
    gpu_side decode_bundled.gpu 600 "$PY" "$MEASURE" decode "$BUNDLED" --tokens $TOKENS --gpu-layers -1
    step first_token_2000.cpu 900 "$PY" "$MEASURE" first-token "$BUNDLED" --prompt-tokens $PROMPT
    gpu_side first_token_2000.gpu 600 "$PY" "$MEASURE" first-token "$BUNDLED" --prompt-tokens $PROMPT --gpu-layers -1

    step llama_1b.build 900 "$PY" "$MEASURE" build-llama "$WORK/l1b" "${SHAPE[@]}"
    NO_QUALITY=()  # the quantization quality report is not what is measured here
    "$PY" -m talesmith.cli.main convert --help 2>/dev/null | grep -q -- '--no-quality' && NO_QUALITY=(--no-quality)
    step llama_1b.convert 1200 "$PY" -m talesmith.cli.main convert "$WORK/l1b/llama" -o "$WORK/l1b/out" \
        --quant Q4_K_M --name llama1b "${NO_QUALITY[@]}"
    Q4="$WORK/l1b/out/llama1b-Q4_K_M.gguf"
    step decode_llama_1b.cpu 900 "$PY" "$MEASURE" decode "$Q4" --tokens $TOKENS
    gpu_side decode_llama_1b.gpu 600 "$PY" "$MEASURE" decode "$Q4" --tokens $TOKENS --gpu-layers -1

    if "$PY" -m talesmith.cli.main batch --help 2>/dev/null | grep -q -- '--parallel'; then
        layers=-1; [ $CPU_ONLY -eq 1 ] && layers=0
        for p in 1 16; do
            step batch_parallel.p$p 900 "$PY" "$MEASURE" batch "$Q4" --parallel $p --rows $ROWS --tokens $TOKENS \
                --gpu-layers $layers --work "$WORK/batch"
        done
    else
        note batch_parallel '{"skipped": "talesmith batch has no --parallel option in this tree"}'
    fi

    step lora_merge.cpu 900 "$PY" "$MEASURE" merge "$WORK/l1b/llama" "$WORK/l1b/lora" --device cpu
    gpu_side lora_merge.cuda 900 "$PY" "$MEASURE" merge "$WORK/l1b/llama" "$WORK/l1b/lora" --device cuda

    step onnx.build 900 "$PY" "$MEASURE" build-llama "$WORK/onnx" "${ONNX_SHAPE[@]}"
    step onnx.convert 1800 "$PY" -m talesmith.cli.main convert "$WORK/onnx/llama" -o "$WORK/onnx/out" --to onnx \
        --quant fp16,int4 --name small
    for q in fp16 int4; do
        step onnx.$q.cpu 900 "$PY" "$MEASURE" decode "$WORK/onnx/out/small-onnx-$q" --backend onnx --device cpu \
            --tokens $TOKENS
        gpu_side onnx.$q.cuda 600 "$PY" "$MEASURE" decode "$WORK/onnx/out/small-onnx-$q" --backend onnx \
            --device cuda --tokens $TOKENS
    done
fi

note run "{\"cpu_only\": $([ $CPU_ONLY -eq 1 ] && echo true || echo false), \"quick\": $([ $QUICK -eq 1 ] && echo true || echo false), \"seconds\": $(( $(date +%s) - started )), \"work\": \"$WORK\"}"
if [ -x "$PY" ]; then
    "$PY" "$MEASURE" merge-json "$OUTDIR/gpu_check.json" "$OUTDIR"/parts/*.json
else
    cat "$OUTDIR"/parts/*.json
fi
