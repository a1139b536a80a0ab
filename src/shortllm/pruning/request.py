"""What a prune is asked and what it did: the request and result of the prune job (HF and GGUF outputs alike),
and the inputs a request reads, shared by ``pruning/run.py``, ``pruning/select.py`` and ``pruning/gguf.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortllm.models.checkpoint import DEFAULT_MAX_SHARD_SIZE
from shortllm.models.settings import LoadSettings
from shortllm.pruning.export import data_inputs, model_inputs
from shortllm.pruning.plan import Plan
from shortllm.pruning.replace import ReplaceOptions
from shortllm.scoring.options import ScoreOptions


@dataclass
class PruneRequest:
    """Everything the prune job needs; built by ``cli/prune.py``. Exactly one of blocks/ratio/num_blocks."""

    model: str | None
    out: Path | None
    blocks: list[int] | None = None
    ratio: float | None = None
    num_blocks: int | None = None
    scores_dir: Path | None = None
    scoring: ScoreOptions = field(default_factory=ScoreOptions)
    settings: LoadSettings = field(default_factory=LoadSettings)
    overwrite: bool = False
    dry_run: bool = False
    command: str = "shortllm prune"
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE
    out_format: str | None = None  # "hf" | "gguf"; None: gguf when --out ends in .gguf (pruning/gguf.py)
    keep_attention_pattern: bool = False  # choose only removals that keep llama.cpp's index-derived roles
    replace: str | None = None  # a pruning/replace.py method (e.g. "linear": ReplaceMe) folded in before surgery
    replace_options: ReplaceOptions = field(default_factory=ReplaceOptions)


@dataclass
class PruneResult:
    """What the job did; ``as_dict`` is the JSON the CLI prints and the manifest records."""

    model: str
    fingerprint: str | None
    plan: Plan
    removed_original: list[int]
    kept_original: list[int]
    how: str
    requested_ratio: float | None = None
    scores: dict[str, Any] | None = None
    out: str | None = None
    reload_max_diff: float | None = None
    surgery: str | None = None  # "out-of-core" (files rewritten tensor by tensor) or "in-memory"
    written: dict[str, Any] | None = None  # what out-of-core surgery wrote and how it was verified
    patterns: dict[str, Any] | None = None  # llama.cpp's index-derived roles checked (pruning/pattern.py)
    out_format: str = "hf"
    replacement: dict[str, Any] | None = None  # what --replace fitted and where it was folded
    # Multimodal checkpoints: params_before/after and the ratios count the whole model; this is the part
    # outside the language model (vision tower, projector), never pruned. None for text-only models.
    params_outside_language_model: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fingerprint": self.fingerprint,
            "how": self.how,
            "num_blocks_before": self.plan.num_blocks,
            "num_blocks_after": len(self.plan.kept),
            "removed": self.plan.removed,
            "kept": self.plan.kept,
            "removed_original": self.removed_original,
            "kept_original": self.kept_original,
            "params_before": self.plan.params_before,
            "params_after": self.plan.params_after,
            "requested_ratio": self.requested_ratio,
            "achieved_ratio": round(self.plan.achieved_ratio, 6),
            "params_outside_language_model": self.params_outside_language_model,
            "scores": self.scores,
            "out": self.out,
            "reload_max_diff": self.reload_max_diff,
            "surgery": self.surgery,
            "written": self.written,
            "format": self.out_format,
            "runtime_patterns": self.patterns,
            "replacement": self.replacement,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def prune_inputs(req: PruneRequest) -> list[tuple[str, Any]]:
    """What a prune reads: the model, a --scores folder, calibration data (when scoring now or fitting --replace)."""
    found = model_inputs("input model", req.model) + [("--scores folder", req.scores_dir)]
    if (req.blocks is None and req.scores_dir is None) or req.replace is not None:
        cal = req.scoring.calibration
        found += data_inputs("calibration data", cal.data, cal.data_dir)
    return found
