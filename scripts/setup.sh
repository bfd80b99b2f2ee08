#!/usr/bin/env bash
# Installs adversarial-midibert (editable) with its train, search, test and demo extras into the current Python: what the
# README's two commands need (accelerate launch examples/pretrain.py; python3 -m pytest -n 2 -q tests).
# A CPU build of PyTorch is installed only when no torch is importable: an existing torch
# (CPU or CUDA) is never replaced. Set PYTHON to choose the interpreter.
set -euo pipefail
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "setup: no torch found, installing the CPU build torch==2.13.0"
  "$PYTHON" -m pip install --quiet "torch==2.13.0"
fi
"$PYTHON" -m pip install --quiet -e ".[train,search,test,demo]"
"$PYTHON" -c "import importlib.metadata as m; print('setup: ' + ', '.join(f'{p} {m.version(p)}' for p in ('torch', 'transformers', 'miditok', 'adversarial-midibert')))"
