#!/usr/bin/env bash
# The GPU check (issue 14): under 10 minutes on one GPU, every figure next to its CPU peer.
#
#   benchmarks/gpu_check.sh [OUT_DIR]          # default gpu_check_out/; needs `make venv` first
#   DEVICE=cpu QUICK=1 benchmarks/gpu_check.sh /tmp/gc   # the same steps on a CPU, tiny sizes (a dry run)
#
# 1. the CUDA tests (tests/sampling/test_cuda.py, tests/training/test_cuda_train.py);
# 2. the sampler benchmark (walks, PinSage, fanout) on DEVICE and on the CPU (walk steps/s);
# 3. the training benchmark (demo config) on DEVICE and on the CPU (samples/s, peak GPU memory);
# 4. a bf16 training run of the joint-VLM config (training/configs/vlm_joint.yaml) on the tiny
#    random Qwen2-VL (pinclip.testing.tiny_checkpoints), frozen and with LoRA + gradient
#    checkpointing (samples/s, peak memory);
# 5. benchmarks/vlm_memory.py on DEVICE: Qwen2-VL-2B parameters and activation bytes per token
#    per layer (the inputs of docs/SCALING.md's memory arithmetic).
# Every step writes OUT_DIR/<step>.json or .txt; OUT_DIR/summary.txt collects the headline lines.
# The steps' time limits add up to 590 s, so the whole check stays under 10 minutes.
# A step that fails is reported and the script goes on (exit status 1 at the end).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
failed=0
step() {   # step NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        echo "ok   $name ($((SECONDS - t0)) s)" | tee -a "$OUT/summary.txt"
    else
        echo "FAIL $name ($((SECONDS - t0)) s, exit $?): see $OUT/$name.log" | tee -a "$OUT/summary.txt"
        tail -n 5 "$OUT/$name.log"
        failed=1
    fi
}
: >"$OUT/summary.txt"
{ date -u; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"; nvidia-smi 2>/dev/null | head -15; } \
    >"$OUT/machine.txt" 2>&1

if [ "$QUICK" = 1 ]; then
    WALK=(--walk-seeds 2000 --pinsage-seeds 64 --fanout-seeds 64 --repeats 1)
    TRAIN=(--pins 300 --boards 30 --steps 6 --warmup 2 --workers 0)
    VLM_STEPS=3
else
    WALK=(--repeats 3)
    TRAIN=(--steps 40 --workers 4)
    VLM_STEPS=30
fi

if [ "$DEVICE" != cpu ]; then
    step cuda_tests 100 "$PY" -m pytest -q -p no:cacheprovider tests/sampling/test_cuda.py tests/training/test_cuda_train.py
fi
step sampling 90 "$PY" benchmarks/bench_sampling.py --device "$([ "$DEVICE" = cpu ] && echo cpu || echo auto)" \
    --no-dgl "${WALK[@]}" --json --out "$OUT/sampling.json"
step train 150 "$PY" benchmarks/bench_train.py --device "$([ "$DEVICE" = cpu ] && echo cpu || echo auto)" \
    "${TRAIN[@]}" --json --out "$OUT/train.json" --work-dir "$OUT/train_work"

step tiny_checkpoints 30 "$PY" -m pinclip.testing.tiny_checkpoints "$OUT/tiny" --families qwen2_vl,bert --force
VLM=(--config vlm_joint --pins 300 --boards 30 --steps "$VLM_STEPS" --warmup 2 --workers 2 --device "$DEVICE"
     "model.overrides.vlm.pretrained=$OUT/tiny/qwen2_vl" "model.overrides.text.pretrained=$OUT/tiny/bert"
     model.overrides.vlm.image_size=64 model.overrides.vision.image_size=64 model.precision=bf16
     train.batch_size=32 sampler.pairs.num_negatives=64 model.overrides.fusion.patch_layers=[-1])
step vlm_frozen_bf16 60 "$PY" benchmarks/bench_train.py "${VLM[@]}" --json --out "$OUT/vlm_frozen_bf16.json" \
    --work-dir "$OUT/vlm_frozen_work"
step vlm_lora_bf16 70 "$PY" benchmarks/bench_train.py "${VLM[@]}" model.overrides.vlm.lora.rank=8 \
    model.overrides.vlm.gradient_checkpointing=true optim.layer_decay=0.9 --json --out "$OUT/vlm_lora_bf16.json" \
    --work-dir "$OUT/vlm_lora_work"
step vlm_memory 90 "$PY" benchmarks/vlm_memory.py --device "$DEVICE" $([ "$QUICK" = 1 ] && echo --batch 1) \
    --out "$OUT/vlm_memory.json"

"$PY" - "$OUT" 2>&1 <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None
for name in ("train", "vlm_frozen_bf16", "vlm_lora_bf16"):
    rep = load(name)
    for r in (rep or {}).get("results", []):
        print(f"{name}: {r['device']} {r['precision']} workers {r['num_workers']}: {r['samples_per_s']:.1f} samples/s, "
              f"data wait {r['data_wait_share']:.1%}, peak GPU memory {r.get('peak_gpu_memory_gb')} GB")
s = load("sampling")
if s:
    for threads, run in s.get("runs", {}).items():
        for method, r in run.get("methods", {}).items():
            print(f"sampling ({threads} threads) {method}: {r['throughput']:,.0f} {r['unit']} (median of "
                  f"{len(r['samples_s'])})")
m = load("vlm_memory")
if m:
    print("vlm_memory: saved bytes per token per layer", {k: round(v["bytes_per_token_per_layer"])
                                                           for k, v in m["activations"].items()},
          "peak bytes per token per layer", {k: v.get("peak_bytes_per_token_per_layer")
                                             for k, v in m["activations"].items()})
EOF
echo "summary: $OUT/summary.txt"
exit $failed
