#!/usr/bin/env bash
# model.sh VENV: builds the tiny model, tokenizer and LoRA adapter (build_model.py) into a
# cache directory keyed by the builder's hash, and prints that directory on stdout.
set -euo pipefail
# Only the directory goes to stdout (the caller captures it); everything else to stderr.
exec 3>&1 1>&2
VENV=$1
HERE=$(cd "$(dirname "$0")" && pwd)
HASH=$(sha256sum "$HERE/build_model.py" | cut -c1-12)
DIR=${XDG_CACHE_HOME:-$HOME/.cache}/infergw/vllm-tiny-model-$HASH
if [[ -f $DIR/.infergw-complete ]]; then
  echo "vllm-model: cached $DIR"
  echo "$DIR" >&3
  exit 0
fi
rm -rf "$DIR"
mkdir -p "$DIR"
echo "vllm-model: $(date -u +%H:%M:%S) building the tiny model into $DIR"
HF_HUB_OFFLINE=1 "$VENV/bin/python" "$HERE/build_model.py" "$DIR"
touch "$DIR/.infergw-complete"
echo "$DIR" >&3
