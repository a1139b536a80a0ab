"""The prune job: plan on the config alone, then load, cut, save atomically and verify the reload."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shortllm.models.loading import LoadSettings, check_settings, load_model, load_skeleton
from shortllm.models.surgery import count_params, drop_blocks, original_indices
from shortllm.pruning.export import (atomic_dir, check_output_dir, model_card, save_model, verify_reload,
                                     write_manifest)
from shortllm.pruning.plan import Plan, plan_from_blocks

log = logging.getLogger(__name__)


@dataclass
class PruneRequest:
    """Everything the prune job needs; built by ``cli/prune.py``."""

    model: str | None
    blocks: list[int]
    out: Path | None
    settings: LoadSettings = field(default_factory=LoadSettings)
    overwrite: bool = False
    dry_run: bool = False
    command: str = "shortllm prune"


@dataclass
class PruneResult:
    """What the job did; ``as_dict`` is the JSON the CLI prints and the manifest records."""

    model: str
    fingerprint: str | None
    plan: Plan
    removed_original: list[int]
    kept_original: list[int]
    out: str | None = None
    reload_max_diff: float | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fingerprint": self.fingerprint,
            "num_blocks_before": self.plan.num_blocks,
            "num_blocks_after": len(self.plan.kept),
            "removed": self.plan.removed,
            "kept": self.plan.kept,
            "removed_original": self.removed_original,
            "kept_original": self.kept_original,
            "params_before": self.plan.params_before,
            "params_after": self.plan.params_after,
            "achieved_ratio": round(self.plan.achieved_ratio, 6),
            "out": self.out,
            "reload_max_diff": self.reload_max_diff,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def prune(req: PruneRequest) -> PruneResult:
    """Run the prune job; with ``dry_run`` only the plan is computed (no weights loaded, nothing written).

    Raises:
        ShortLLMError: for bad input (checked before any slow work) or a failed reload check.
    """
    t0 = time.perf_counter()
    check_settings(req.settings)
    if not req.dry_run:
        assert req.out is not None, "the CLI requires --out unless --dry-run"
        check_output_dir(req.out, req.overwrite)
    skeleton, source = load_skeleton(req.model, req.settings)
    counts = count_params(skeleton)
    plan = plan_from_blocks(counts, req.blocks)
    origin = original_indices(skeleton.config, plan.num_blocks)
    result = PruneResult(
        model=source.spec, fingerprint=None, plan=plan,
        removed_original=[origin[i] for i in plan.removed], kept_original=[origin[i] for i in plan.kept],
    )
    result.timings["plan"] = time.perf_counter() - t0
    if req.dry_run:
        return result

    t1 = time.perf_counter()
    loaded = load_model(req.model, req.settings)
    result.fingerprint = loaded.fingerprint
    result.timings["load"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    drop_blocks(loaded.model, plan.removed)
    with atomic_dir(req.out, req.overwrite) as tmp:
        save_model(loaded.model, loaded.tokenizer, tmp)
        result.timings["save"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        result.reload_max_diff = verify_reload(tmp, loaded.model)
        result.timings["verify"] = time.perf_counter() - t3
        result.out = str(req.out)
        (tmp / "README.md").write_text(model_card(
            name=req.out.name, source_spec=source.spec, removed=result.removed_original,
            kept=result.kept_original, num_blocks=len(origin), params_before=plan.params_before,
            params_after=plan.params_after, how="blocks chosen by hand (--blocks)", command=req.command,
        ))
        result.timings["total"] = time.perf_counter() - t0
        write_manifest(
            tmp, "prune",
            options={"blocks": req.blocks, **asdict(req.settings), "overwrite": req.overwrite},
            source={"spec": source.spec, "kind": source.kind, "path": source.path,
                    "fingerprint": loaded.fingerprint},
            results=result.as_dict(), timings=result.timings,
        )
    return result
