#!/usr/bin/env bash
# The GPU check, in one command: every test marked `cuda`, the quick suite on this machine's torch, and
# the CUDA benchmarks, each stage under its own timeout, going on past a failing stage, figures to files.
#
#   bash tools/gpu_check.sh [OUT_DIR]          # default OUT_DIR: output/gpu_check
#   bash tools/gpu_check.sh OUT_DIR --tiny     # smoke run (tiny sizes; where CUDA is absent the CUDA
#                                              # stages are reported as skipped)
#
# OUT_DIR/summary.md: one row per stage (ok / FAILED rc / skipped, seconds, the figures' file);
# env.txt, cuda_tests.{log,xml}, quick_suite.log, bench_norms_{float32,float16}.txt,
# bench_step.jsonl + bench_step.md (s/iter, peak memory, GPU busy share per recipe and precision),
# profile_<recipe>_<precision>.txt (the profiler's kernel table of each run).
# Environment: PYTHON (default python3, else python), GPU_CHECK_STAGE_TIMEOUT (s, default 1800),
# GPU_CHECK_BENCH_TIMEOUT (s per benchmark run, default 600). Missing fvcore/pycocotools are installed
# from .whl/ into .pydeps/ when .whl/ exists (see the GPU machine notes: fetch_wheels.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=output/gpu_check
TINY=0
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg (use --tiny or an OUT_DIR)" >&2; exit 2 ;;
    *) OUT="$arg" ;;
  esac
done
PY=${PYTHON:-$(command -v python3 || command -v python)}
STAGE_TIMEOUT=${GPU_CHECK_STAGE_TIMEOUT:-1800}
BENCH_TIMEOUT=${GPU_CHECK_BENCH_TIMEOUT:-600}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY="$OUT/summary.md"
printf '# GPU check (%s)\n\n| stage | result | seconds | figures |\n|---|---|---|---|\n' "$(date -u +%FT%TZ)" > "$SUMMARY"

row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >> "$SUMMARY"; echo "gpu_check: $1: $2"; }

# stage NAME FIGURES_FILE COMMAND...: run under the stage timeout, output to OUT/NAME.log, one summary row.
stage() {
  local name=$1 figures=$2; shift 2
  local start=$SECONDS rc
  timeout "$STAGE_TIMEOUT" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local result="ok"
  [ $rc -eq 124 ] && result="FAILED (timeout ${STAGE_TIMEOUT}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && result="FAILED (rc $rc)"
  local tail_line
  tail_line=$(grep -E '(passed|failed|skipped|error)' "$OUT/$name.log" | tail -1)
  [ -n "$tail_line" ] && result="$result: $tail_line"
  row "$name" "$result" $((SECONDS - start)) "$figures"
}

# ---------------------------------------------------------------- environment and dependencies
if ! "$PY" -c "import fvcore, pycocotools" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target .pydeps .whl/*.whl > "$OUT/deps.log" 2>&1
  export PYTHONPATH="$PWD/.pydeps${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - > "$OUT/env.txt" 2>&1 <<'EOF'
import platform, torch, torchvision
print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}")
print(f"CUDA available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16: {torch.cuda.is_bf16_supported()}")
try:
    import fvcore, pycocotools  # noqa: F401
    print("fvcore, pycocotools: importable")
except ImportError as e:
    print(f"MISSING: {e} (put their wheels in .whl/: bash ../shared/gpu/fetch_wheels.sh)")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi >> "$OUT/env.txt" 2>&1
row env "$(head -2 "$OUT/env.txt" | tr '\n' ' ')" 0 env.txt
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then CUDA=1; else CUDA=0; fi

# ---------------------------------------------------------------- tests
# Every test marked cuda (slow ones included: the quick start on CUDA with AMP off and on); where CUDA
# is absent they all report as skipped.
if [ $TINY -eq 1 ]; then MARK="cuda and not slow"; else MARK="cuda"; fi
stage cuda_tests cuda_tests.xml "$PY" -m pytest -q -rs -p no:cacheprovider -m "$MARK" --junitxml="$OUT/cuda_tests.xml" tests
if [ $TINY -eq 1 ]; then
  row quick_suite "skipped (--tiny)" 0 -
else
  # The CPU-pinned quick suite on this machine's torch release (e.g. 2.11, which refuses eps <= 0).
  stage quick_suite quick_suite.log "$PY" -m pytest -q -p no:cacheprovider -m "not slow and not cuda" tests
fi

# ---------------------------------------------------------------- benchmarks
if [ $CUDA -eq 0 ] && [ $TINY -eq 0 ]; then
  row bench_norms "skipped (no CUDA)" 0 -
  row bench_step "skipped (no CUDA)" 0 -
else
  if [ $TINY -eq 1 ]; then NORM_ARGS=(--shapes 1x64x32x32 --repeat 2); else NORM_ARGS=(--stat median --repeat 30); fi
  if [ $CUDA -eq 1 ]; then NORM_ARGS+=(--no-cpu); fi
  for dtype in float32 float16; do
    stage "bench_norms_$dtype" "bench_norms_$dtype.txt" "$PY" benchmarks/bench_norms.py "${NORM_ARGS[@]}" --dtype "$dtype"
    cp "$OUT/bench_norms_$dtype.log" "$OUT/bench_norms_$dtype.txt"
  done
  # Full iterations, 2 images at 800x1333, fp32 and AMP, each recipe and torchvision's reference.
  if [ $CUDA -eq 1 ]; then
    STEP_ARGS=(--device cuda)
    RECIPES=(mask_rcnn_R_50_FPN_1x_frozenbn.yaml mask_rcnn_R_50_FPN_1x_gn.yaml mask_rcnn_R_50_FPN_1x_syncbn.yaml
             mask_rcnn_R_50_FPN_1x_sn.yaml torchvision)
  else  # --tiny without CUDA: the same code path on CPU, tiny
    STEP_ARGS=(--full-iteration --size 64x96 --iters 1 --warmup 1)
    RECIPES=(tiny/mask_rcnn_R_18_FPN_gn.yaml)
  fi
  [ $TINY -eq 1 ] && [ $CUDA -eq 1 ] && STEP_ARGS+=(--size 256x384 --iters 3 --warmup 2)
  : > "$OUT/bench_step.jsonl"
  start=$SECONDS
  failed=0
  for recipe in "${RECIPES[@]}"; do
    for amp in "" --amp; do
      if [ -n "$amp" ]; then tag=$(basename "${recipe%.yaml}")_amp; else tag=$(basename "${recipe%.yaml}")_fp32; fi
      if [ "$recipe" = torchvision ]; then what=(--torchvision-reference); else what=(--config "$recipe"); fi
      timeout "$BENCH_TIMEOUT" "$PY" benchmarks/bench_step.py "${STEP_ARGS[@]}" "${what[@]}" $amp --json \
        --profile-table "$OUT/profile_$tag.txt" >> "$OUT/bench_step.jsonl" 2> "$OUT/bench_step_$tag.err" \
        || { failed=$((failed + 1)); echo "gpu_check: bench_step $tag failed (see bench_step_$tag.err)"; }
    done
  done
  "$PY" tools/benchmark_table.py --speed "$OUT/bench_step.jsonl" --format markdown > "$OUT/bench_step.md" 2>&1
  if [ $failed -eq 0 ]; then result=ok; else result="FAILED ($failed runs)"; fi
  [ $CUDA -eq 0 ] && result="$result (CPU form only; CUDA figures skipped: no CUDA)"
  row bench_step "$result" $((SECONDS - start)) "bench_step.md"
fi
echo
cat "$SUMMARY"
