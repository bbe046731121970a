#!/usr/bin/env bash
# The peers' environments. DeepCache installs into our .venv (it changes nothing there); the two
# optimum pipelines need older transformers/huggingface_hub, so each gets an overlay venv under
# .venv/: its own site-packages first (the conflicting packages), then ours (torch 2.13.0,
# openvino, onnxruntime, numpy...), so torch is never downloaded or changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=benchmarks/peers
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/pip install -c "$here/constraints.txt" "DeepCache==0.1.1"
for name in openvino onnxruntime; do
  venv=.venv/peers-${name/openvino/ov}
  venv=${venv/onnxruntime/ort}
  [ -x "$venv/bin/python" ] || .venv/bin/python -m venv "$venv"
  vsite=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$(cd "$site" && pwd)" > "$vsite/zz_main_venv.pth"
  "$venv/bin/pip" install -c "$here/constraints.txt" -r "$here/requirements-$name.txt"
  # optimum-intel pulls a torchvision built for another torch; nothing here needs it, and
  # transformers fails to import image processors while it is present.
  "$venv/bin/pip" uninstall -y torchvision >/dev/null 2>&1 || true
done
echo "peer venvs ready: .venv/peers-ov, .venv/peers-ort"
