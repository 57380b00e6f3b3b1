#!/usr/bin/env bash
# One GPU check of the TTS engine, in one go (under 8 minutes on an H100/H200): builds the full-size
# random-weight Chatterbox checkpoint, then runs benchmarks/tts_concurrency.py on it (raw generate_stream
# one stream after another vs our engine with 1, 2, 4, 8 concurrent streams, absolute times; its last
# line is one raw generate_stream first chunk, the baseline). Everything goes to the terminal and to
# $OUT/gpu_check.log (OUT defaults to /tmp/gpu_check_out).
#
#   benchmarks/gpu_check.sh                       # on the GPU machine (python3 with CUDA torch)
#   benchmarks/gpu_check.sh --streams 1,2,4,8,12,16 --warm-streams 16 --sentences 3 --audio-s 4 \
#       --raw-max 2 --s3gen-streams 8             # capacity: how many streams stay real time
#   benchmarks/gpu_check.sh --device cpu --variant tiny --streams 1,2   # dry run here
#
# A machine without this project's Python packages gets them from wheels in ./.whl (installed with
# --no-deps into /tmp/site, first on PYTHONPATH): chatterbox-streaming 0.1.2 and the pins it needs
# (transformers 4.46.3, tokenizers 0.20, huggingface_hub < 1, diffusers 0.29, setuptools < 81 for Perth)
# plus what voicechat's TTS modules import. Any other arguments go to tts_concurrency.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-${TMPDIR:-/tmp}/gpu_check_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1
# Here: the project's virtualenv. On the GPU machine (no .venv travels): its python3 plus the wheels.
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
PYTHON="${PYTHON:-python3}"

echo "== gpu_check $(date -u +%FT%TZ) on $(hostname)"
if [ "$PYTHON" != .venv/bin/python ] && ls .whl/*.whl >/dev/null 2>&1; then
    echo "== installing $(ls .whl/*.whl | wc -l) wheels into /tmp/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "FAILED: installing the wheels from .whl"; exit 2; }
    export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# Versions, and every import the benchmark needs, before any heavy work: fail fast and say which.
"$PYTHON" - <<'EOF' || { echo "FAILED: an import above (see the traceback)"; exit 3; }
import importlib, sys
print("python", sys.version.split()[0])
for name in ["torch", "numpy", "transformers", "tokenizers", "huggingface_hub", "diffusers", "librosa",
             "s3tokenizer", "perth", "omegaconf", "pydantic", "pydantic_settings", "soundfile", "soxr", "setuptools"]:
    module = importlib.import_module(name)
    print(f"  {name} {getattr(module, '__version__', '?')}")
import torch
print("  cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import chatterbox.tts, perth
assert perth.PerthImplicitWatermarker is not None, "Perth's watermarker is None (pkg_resources missing?)"
import voicechat.tts.engine, voicechat.tts.render, voicechat.tts.checkpoint  # noqa: F401
print("imports ok")
EOF

started=$(date +%s)
"$PYTHON" benchmarks/tts_concurrency.py --cache-dir "${CACHE_DIR:-/tmp/voicechat-bench}" "$@"
status=$?
echo "== tts_concurrency.py exit $status after $(( $(date +%s) - started )) s"
exit $status
