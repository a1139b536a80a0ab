"""Helpers shared by the benchmark scripts (not part of the installed package)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch


def machine() -> dict:
    """Facts that change timings: CPU count, torch threads, versions."""
    import transformers

    import shortllm

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "shortllm": shortllm.__version__,
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def emit(result: dict, out: str | None) -> None:
    """Print the result as JSON and write it to ``out`` if given."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    sys.stdout.flush()
