#!/usr/bin/env bash
# The CUDA checks, as run on a lent H100/H200 (no registry there: diffusers/pydantic travel as
# wheels, see benchmarks/README.md). One short script because device time is scarce; every step
# has its own timeout so that one slow step cannot eat the others' results.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
PY=${PYTHON:-python3}
# STEPS picks a subset, e.g. STEPS="pytest bench" to rerun only those; PYTEST_K selects tests.
want() { [[ " ${STEPS:-pytest backends unet bench gate techniques constrained peers} " == *" $1 "* ]]; }
SDOPT=("$PY" -c 'import sys; from sdopt.cli import main; sys.argv[0] = "sdopt"; main()')

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
"$PY" -c 'import torch, diffusers, onnxruntime as o
print("torch", torch.__version__, "cuda", torch.version.cuda, "diffusers", diffusers.__version__,
      "onnxruntime", o.__version__, o.get_available_providers())' 2>&1 | tee -a "$OUT/gpu.txt"
want pytest && timeout "${PYTEST_TIMEOUT:-150}" "$PY" -m pytest tests/test_cuda.py ${PYTEST_K:+-k "$PYTEST_K"} -v -s -p no:cacheprovider -o addopts="" 2>&1 \
    | tee "$OUT/pytest_cuda.log" | tail -25
want backends && timeout 60 "${SDOPT[@]}" backends --device cuda 2>&1 | tee "$OUT/backends_cuda.txt" | tail -30
want unet && timeout 120 "$PY" benchmarks/unet_speedup.py --device cuda --size 512 --ignore torch_compile \
    --out "$OUT/unet_speedup_cuda_512_eager.json" 2>&1 | tail -25
want unet && timeout 230 "$PY" benchmarks/unet_speedup.py --device cuda --size 512 \
    --out "$OUT/unet_speedup_cuda_512.json" 2>&1 | tail -25
# End to end, sd15 at 512 px, 20 steps: original vs torch_compile/fp16, interleaved.
want bench && timeout 300 "${SDOPT[@]}" bench --config benchmarks/gpu_sd15.toml --out /tmp/gpu-bench --quiet \
    2>&1 | tail -25 && cp /tmp/gpu-bench/results.json "$OUT/bench_cuda_sd15_512.json"
# The CI gate on CUDA: bench a baseline, save it, gate against it (tiny model: the wiring).
if want gate; then
  G=/tmp/gpu-gate; rm -rf "$G"; mkdir -p "$G"
  sed -e 's/^device = .*/device = "cuda"/' -e 's/^runs = .*/runs = 6/' examples/sdopt.toml \
      > "$G/sdopt.toml"
  timeout 120 "${SDOPT[@]}" bench --config "$G/sdopt.toml" --out "$G/base" --quiet 2>&1 | tail -3
  timeout 30 "${SDOPT[@]}" baseline save --config "$G/sdopt.toml" --results "$G/base" 2>&1 | tail -2
  timeout 120 "${SDOPT[@]}" gate --config "$G/sdopt.toml" --out "$G/out" --quiet 2>&1 | tail -8
  echo "gate exit: ${PIPESTATUS[0]}" | tee "$OUT/gate_cuda_exit.txt"
  cp "$G/out/verdict.json" "$OUT/gate_cuda_verdict.json" 2>/dev/null
fi
# Techniques end to end on CUDA (step cache, token merging, fewer steps need eager torch).
want techniques && timeout 240 "$PY" benchmarks/techniques_e2e.py --device cuda --size 512 \
    --steps 20 --base torch_eager/fp16 --out "$OUT/techniques_e2e_cuda_512.json" 2>&1 | tail -22
# The constrained search on CUDA, sd15 at 512 px: torch backends, then the bf16 VAE decoder on
# the pick (judged end to end on images); the table goes to the JSON.
want constrained && timeout 300 "$PY" - "$OUT/constrained_cuda_512.json" <<'PYEOF' 2>&1 | tail -30
import json, sys, sdopt
pipe = sdopt.build_preset("sd15")
opt = sdopt.optimize_model(pipe, ["a photo of an astronaut riding a horse on mars",
                                  "a watercolor painting of a city at night"],
                           metric_drop_ths=0.05, device="cuda", height=512, width=512,
                           num_inference_steps=20, backends=["torch_eager"], show=True,
                           reuse_search=False)
json.dump(opt.sdopt_result.to_dict(), open(sys.argv[1], "w"), indent=1, default=str)
print("selected", opt.sdopt_result.selected.id, "techniques", opt.unet.info["techniques"])
PYEOF
# sdopt against diffusers fp16 eager, diffusers' compile recipe and DeepCache, end to end, one
# process (#16); writes a first result before the recipe's max-autotune compile.
want peers && timeout "${PEERS_TIMEOUT:-540}" "$PY" benchmarks/gpu_peers.py \
    --deadline-s "${PEERS_DEADLINE:-420}" --out "$OUT/gpu_peers_sd15_512.json" ${PEERS_ARGS:-} 2>&1 \
    | tee "$OUT/gpu_peers.log" | grep -v -E "Warning|warn\(" | tail -60
ls -la "$OUT"
