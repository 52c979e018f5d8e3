#!/usr/bin/env bash
# The GPU check, in one command that fits one 10-minute device call: the tests marked `cuda`, a 2-process
# train_net run over gloo with CUDA tensors, and the CUDA benchmarks, each stage timed under its own
# timeout, going on past a failing stage, figures to files.
#
#   bash tools/gpu_check.sh [OUT_DIR]          # default plan, under 8 minutes on an H200 (GPU_CHECK_BUDGET)
#   bash tools/gpu_check.sh OUT_DIR --full     # the long plan: also the slow cuda tests, the CPU quick suite,
#                                              # bench_norms and torchvision's reference (about 30+ minutes)
#   bash tools/gpu_check.sh OUT_DIR --tiny     # smoke run (tiny sizes; where CUDA is absent the CUDA
#                                              # stages are reported as skipped, the 2-process run uses the CPU)
#
# OUT_DIR (default: $DEST/gpu_check when $OUT is set, as on the device machine, where only $OUT comes back;
# else output/gpu_check): summary.md, one row per stage (ok / FAILED rc / skipped, seconds, figures' file);
# env.txt, cuda_tests.{log,xml}, train_2proc_gloo.log (+ its OUTPUT_DIR), bench_step.jsonl + bench_step.md
# (s/iter, peak memory, GPU busy share per recipe and precision), profile_<recipe>_<precision>.txt;
# with --full also quick_suite.log and bench_norms_{float32,float16}.txt.
# Environment: PYTHON (default python3, else python), GPU_CHECK_STAGE_TIMEOUT (s per stage, default 240),
# GPU_CHECK_BENCH_TIMEOUT (s per benchmark run, default 90), GPU_CHECK_BUDGET (s; benchmark runs that would
# start after it are skipped and counted in the summary; default 380, --full: none). Missing
# fvcore/pycocotools are installed from .whl/ into .pydeps/ when .whl/ exists (carry `.whl/` with the
# checkout; the GPU machine notes: fetch_wheels.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${OUT:-}" ]; then DEST="$OUT/gpu_check"; else DEST=output/gpu_check; fi
TINY=0
FULL=0
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY=1 ;;
    --full) FULL=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg (use --tiny, --full or an OUT_DIR)" >&2; exit 2 ;;
    *) DEST="$arg" ;;
  esac
done
PY=${PYTHON:-$(command -v python3 || command -v python)}
STAGE_TIMEOUT=${GPU_CHECK_STAGE_TIMEOUT:-240}
BENCH_TIMEOUT=${GPU_CHECK_BENCH_TIMEOUT:-90}
if [ $FULL -eq 1 ]; then BUDGET=${GPU_CHECK_BUDGET:-0}; else BUDGET=${GPU_CHECK_BUDGET:-380}; fi
[ $FULL -eq 1 ] && [ -z "${GPU_CHECK_STAGE_TIMEOUT:-}" ] && STAGE_TIMEOUT=1800
[ $FULL -eq 1 ] && [ -z "${GPU_CHECK_BENCH_TIMEOUT:-}" ] && BENCH_TIMEOUT=600
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
SUMMARY="$DEST/summary.md"
printf '# GPU check (%s)\n\n| stage | result | seconds | figures |\n|---|---|---|---|\n' "$(date -u +%FT%TZ)" > "$SUMMARY"

row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >> "$SUMMARY"; echo "gpu_check: $1: $2"; }

# stage NAME FIGURES_FILE COMMAND...: run under the stage timeout, output to OUT/NAME.log, one summary row.
stage() {
  local name=$1 figures=$2; shift 2
  local start=$SECONDS rc
  timeout "$STAGE_TIMEOUT" "$@" > "$DEST/$name.log" 2>&1
  rc=$?
  local result="ok"
  [ $rc -eq 124 ] && result="FAILED (timeout ${STAGE_TIMEOUT}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && result="FAILED (rc $rc)"
  local tail_line
  tail_line=$(grep -E '(passed|failed|skipped|error)' "$DEST/$name.log" | tail -1)
  [ -n "$tail_line" ] && result="$result: $tail_line"
  row "$name" "$result" $((SECONDS - start)) "$figures"
}

# ---------------------------------------------------------------- environment and dependencies
if ! "$PY" -c "import fvcore, pycocotools" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target .pydeps .whl/*.whl > "$DEST/deps.log" 2>&1
  export PYTHONPATH="$PWD/.pydeps${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - > "$DEST/env.txt" 2>&1 <<'EOF'
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
command -v nvidia-smi >/dev/null && nvidia-smi >> "$DEST/env.txt" 2>&1
row env "$(head -2 "$DEST/env.txt" | tr '\n' ' ')" 0 env.txt
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then CUDA=1; else CUDA=0; fi

# ---------------------------------------------------------------- tests
# The tests marked cuda (--full: slow ones too, e.g. the quick start on CUDA); without CUDA all skipped.
if [ $FULL -eq 1 ]; then MARK="cuda"; else MARK="cuda and not slow"; fi
stage cuda_tests cuda_tests.xml "$PY" -m pytest -q -rs -p no:cacheprovider -m "$MARK" --junitxml="$DEST/cuda_tests.xml" tests
if [ $FULL -eq 1 ]; then
  # The CPU-pinned quick suite on this machine's torch release (e.g. 2.11, which refuses eps <= 0).
  stage quick_suite quick_suite.log "$PY" -m pytest -q -p no:cacheprovider -m "not slow and not cuda" tests
else
  row quick_suite "skipped (default plan; --full runs it)" 0 -
fi

# ---------------------------------------------------------------- 2 processes over gloo on one GPU
# train_net with --num-gpus 2 --dist-backend gloo on cuda:0 (NCCL refuses two processes on one GPU): DDP,
# SyncBN's all-reduce of CUDA tensors, running statistics averaged, the evaluator's gather. Without CUDA
# (--tiny) the same run on CPU processes.
two_proc() {
  local data="$DEST/shapes64" device=$1
  "$PY" -m gn_det.data.shapes --out "$data" --num-train 8 --num-val 4 --size 64 --overwrite || return 1
  "$PY" tools/train_net.py --config tests/engine/tiny_mask_rcnn.yaml --num-gpus 2 --dist-backend gloo --overwrite \
    --register-coco gc_train "$data/annotations/instances_train.json" "$data/train" \
    --register-coco gc_val "$data/annotations/instances_val.json" "$data/val" \
    DATASETS.TRAIN "('gc_train',)" DATASETS.TEST "('gc_val',)" MODEL.DEVICE "$device" \
    MODEL.RESNETS.NORM SyncBN MODEL.FPN.NORM SyncBN SOLVER.IMS_PER_BATCH 4 SOLVER.MAX_ITER 4 \
    OUTPUT_DIR "$DEST/train_2proc_gloo" || return 1
  grep -q "Rank 1 of 2" "$DEST/train_2proc_gloo/log.txt.rank1" && [ -f "$DEST/train_2proc_gloo/inference/gc_val/metrics.json" ] \
    && echo "2 processes over gloo on $device: passed"
}
export -f two_proc
export DEST PY
if [ $CUDA -eq 1 ]; then
  stage train_2proc_gloo train_2proc_gloo/ bash -c "two_proc cuda:0"
elif [ $TINY -eq 1 ]; then
  stage train_2proc_gloo "train_2proc_gloo/ (CPU form; no CUDA)" bash -c "two_proc cpu"
else
  row train_2proc_gloo "skipped (no CUDA)" 0 -
fi

# ---------------------------------------------------------------- benchmarks
if [ $CUDA -eq 0 ] && [ $TINY -eq 0 ]; then
  [ $FULL -eq 1 ] && row bench_norms "skipped (no CUDA)" 0 -
  row bench_step "skipped (no CUDA)" 0 -
else
  if [ $FULL -eq 1 ] || [ $TINY -eq 1 ]; then
    if [ $TINY -eq 1 ]; then NORM_ARGS=(--shapes 1x64x32x32 --repeat 2); else NORM_ARGS=(--stat median --repeat 30); fi
    if [ $CUDA -eq 1 ]; then NORM_ARGS+=(--no-cpu); fi
    for dtype in float32 float16; do
      stage "bench_norms_$dtype" "bench_norms_$dtype.txt" "$PY" benchmarks/bench_norms.py "${NORM_ARGS[@]}" --dtype "$dtype"
      cp "$DEST/bench_norms_$dtype.log" "$DEST/bench_norms_$dtype.txt"
    done
  else
    row bench_norms "skipped (default plan; --full runs it)" 0 -
  fi
  # Full iterations, 2 images at 800x1333, fp32 and AMP, per recipe (--full: more iterations, torchvision too).
  if [ $CUDA -eq 1 ]; then
    RECIPES=(mask_rcnn_R_50_FPN_1x_frozenbn.yaml mask_rcnn_R_50_FPN_1x_gn.yaml mask_rcnn_R_50_FPN_1x_syncbn.yaml
             mask_rcnn_R_50_FPN_1x_sn.yaml)
    if [ $FULL -eq 1 ]; then STEP_ARGS=(--device cuda); RECIPES+=(torchvision)
    else STEP_ARGS=(--device cuda --iters 6 --warmup 3 --profile-iters 2); fi
  else  # --tiny without CUDA: the same code path on CPU, tiny
    STEP_ARGS=(--full-iteration --size 64x96 --iters 1 --warmup 1)
    RECIPES=(tiny/mask_rcnn_R_18_FPN_gn.yaml)
  fi
  [ $TINY -eq 1 ] && [ $CUDA -eq 1 ] && STEP_ARGS+=(--size 256x384 --iters 3 --warmup 2)
  : > "$DEST/bench_step.jsonl"
  start=$SECONDS
  failed=0
  over_budget=0
  for recipe in "${RECIPES[@]}"; do
    for amp in "" --amp; do
      if [ -n "$amp" ]; then tag=$(basename "${recipe%.yaml}")_amp; else tag=$(basename "${recipe%.yaml}")_fp32; fi
      if [ "$BUDGET" -gt 0 ] && [ $SECONDS -ge "$BUDGET" ]; then
        over_budget=$((over_budget + 1)); echo "gpu_check: bench_step $tag skipped (budget ${BUDGET}s reached)"; continue
      fi
      if [ "$recipe" = torchvision ]; then what=(--torchvision-reference); else what=(--config "$recipe"); fi
      t0=$SECONDS
      timeout "$BENCH_TIMEOUT" "$PY" benchmarks/bench_step.py "${STEP_ARGS[@]}" "${what[@]}" $amp --json \
        --profile-table "$DEST/profile_$tag.txt" >> "$DEST/bench_step.jsonl" 2> "$DEST/bench_step_$tag.err" \
        || { failed=$((failed + 1)); echo "gpu_check: bench_step $tag failed (see bench_step_$tag.err)"; }
      echo "gpu_check: bench_step $tag $((SECONDS - t0)) s"
    done
  done
  "$PY" tools/benchmark_table.py --speed "$DEST/bench_step.jsonl" --format markdown > "$DEST/bench_step.md" 2>&1
  if [ $failed -eq 0 ]; then result=ok; else result="FAILED ($failed runs)"; fi
  [ $over_budget -gt 0 ] && result="$result ($over_budget runs skipped: GPU_CHECK_BUDGET ${BUDGET}s reached)"
  [ $CUDA -eq 0 ] && result="$result (CPU form only; CUDA figures skipped: no CUDA)"
  row bench_step "$result" $((SECONDS - start)) "bench_step.md"
fi
row total "$(date -u +%FT%TZ)" $SECONDS -
echo
cat "$SUMMARY"
