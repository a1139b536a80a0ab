"""Options shared by every verb, defined once so they are spelled and documented the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Hub id, local HF directory, .gguf file, or alias 'smollm2-135m' "
                 "(the default: the embedded SmolLM2-135M-Instruct).", show_default=False),
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (the checkpoint's own) | float32 | bfloat16 | float16.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps (auto: cuda, else mps, else cpu).")]
DeviceMapOpt = Annotated[
    Optional[str],
    typer.Option("--device-map", help="Passed to from_pretrained, e.g. 'auto' to spread a large model over GPUs.",
                 show_default=False),
]
TrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow the model repository's own Python code to run.")
]
RevisionOpt = Annotated[
    Optional[str], typer.Option("--revision", help="Hub branch, tag or commit.", show_default=False)
]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory (written atomically).",
                                                show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the plan; load no weights, write nothing.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]


def load_settings(dtype: str, device: str, device_map: str | None, trust_remote_code: bool, revision: str | None):
    """Bundle the loading options into the core's LoadSettings (imported lazily to keep --help instant)."""
    from shortllm.models.loading import LoadSettings

    return LoadSettings(dtype=dtype, device=device, device_map=device_map,
                        trust_remote_code=trust_remote_code, revision=revision)
