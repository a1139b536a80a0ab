"""File formats other than Hugging Face checkpoints: GGUF read helpers and the byte-copying GGUF writer."""

from __future__ import annotations

from pathlib import Path

from shortllm.errors import OutputError

OUTPUT_FORMATS = ("hf", "gguf")


def writes_gguf(out: str | Path | None, out_format: str | None) -> bool:
    """Whether a prune writes a GGUF: ``--format gguf``, or no ``--format`` and an ``--out`` ending in .gguf.

    Raises:
        OutputError: an unknown ``--format``, or ``--format hf`` with an ``--out`` named .gguf.
    """
    named = out is not None and Path(out).suffix.lower() == ".gguf"
    if out_format not in (None, *OUTPUT_FORMATS):
        raise OutputError(f"unknown --format {out_format!r}", "use --format hf or --format gguf")
    if out_format == "hf" and named:
        raise OutputError(f"--out {out} ends in .gguf but --format hf writes a Hugging Face folder",
                          "drop --format hf to write a GGUF, or name the folder without .gguf")
    return out_format == "gguf" or (out_format is None and named)
