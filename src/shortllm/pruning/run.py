"""The prune job: decide the blocks (explicit, or k by ratio/count ranked by a criterion or a saved score
run), then load, cut, save atomically and verify the reload."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shortllm.errors import BlockSelectionError
from shortllm.models.loading import (Loaded, LoadSettings, check_settings, fingerprint, load_config, load_model,
                                     load_skeleton, resolve_source)
from shortllm.models.surgery import ParamCount, count_params, drop_blocks, original_indices, rewrite_config
from shortllm.pruning.export import (atomic_dir, check_output_dir, data_inputs, model_card, model_inputs,
                                     save_model, verify_reload,
                                     write_manifest)
from shortllm.pruning.plan import (Plan, blocks_within_ratio, check_ratio, fit_within_ratio, plan_from_blocks,
                                   smallest_first, smallest_ratio_for_one)
from shortllm.scoring.base import Progress, get_criterion
from shortllm.scoring.run import ScoreOptions, read_score_report, removal_from_report, score_loaded
from shortllm.wording import plural

log = logging.getLogger(__name__)


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
            "scores": self.scores,
            "out": self.out,
            "reload_max_diff": self.reload_max_diff,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def blocks_to_remove(req: PruneRequest, counts: ParamCount) -> int:
    """How many blocks ``--ratio`` or ``--num-blocks`` asks for (checked against the model).

    Raises:
        BlockSelectionError: bad ratio, a ratio too small for one block, removing every block.
    """
    n = len(counts.per_block)
    if req.ratio is not None:
        check_ratio(req.ratio)
        # The most blocks the ratio could ever allow (the smallest ones); the criterion's own choice is then
        # shrunk to fit by fit_within_ratio.
        k = blocks_within_ratio(counts, req.ratio, smallest_first(counts))
        if k == 0:
            raise BlockSelectionError(
                f"--ratio {req.ratio:g} is too small to remove one block ({min(counts.per_block):,} of "
                f"{counts.total:,} parameters)", f"use --ratio {smallest_ratio_for_one(counts):g} or more",
            )
    else:
        k = req.num_blocks
        if k is None or k < 1:
            raise BlockSelectionError(f"--num-blocks {k} must be at least 1")
    if k >= n:
        what = f"--ratio {req.ratio:g}" if req.ratio is not None else f"--num-blocks {k}"
        raise BlockSelectionError(f"{what} would remove all {plural(n, 'block')}", "keep at least one block")
    return k


def _mode_check(req: PruneRequest) -> None:
    given = [name for name, v in (("--blocks", req.blocks), ("--ratio", req.ratio), ("--num-blocks", req.num_blocks))
             if v is not None]
    if len(given) != 1:
        raise BlockSelectionError(
            "give exactly one of --blocks, --ratio, --num-blocks" + (f" (got {', '.join(given)})" if given else ""),
            "e.g. --ratio 0.2",
        )
    if req.blocks is not None and req.scores_dir is not None:
        raise BlockSelectionError("--scores only applies with --ratio or --num-blocks")


def prune(req: PruneRequest, progress: Progress = lambda d, t: None) -> PruneResult:
    """Run the prune job. ``dry_run`` computes the plan (scoring if needed) and writes nothing.

    Raises:
        ShortLLMError: for bad input (checked before slow work where possible) or a failed reload check.
    """
    t0 = time.perf_counter()
    _mode_check(req)
    if req.blocks is None and req.scores_dir is None:
        get_criterion(req.scoring.criterion)
    check_settings(req.settings)
    if not req.dry_run:
        if req.out is None:
            raise BlockSelectionError("--out is required", "give an output directory, or --dry-run")
        check_output_dir(req.out, req.overwrite, _inputs(req))
    skeleton, source = load_skeleton(req.model, req.settings)
    counts = count_params(skeleton)
    n = len(counts.per_block)
    origin = original_indices(skeleton.config, n)
    loaded: Loaded | None = None
    report = None
    if req.blocks is not None:
        removed, how = req.blocks, "blocks chosen by hand (--blocks)"
    else:
        k = blocks_to_remove(req, counts)
        if req.scores_dir is not None:
            fp = fingerprint(source, load_config(source, req.settings.trust_remote_code))
            report = read_score_report(req.scores_dir, fp)
            how = f"criterion {report['criterion']} from {req.scores_dir}"
        else:
            t1 = time.perf_counter()
            loaded = load_model(req.model, req.settings)
            result_load = time.perf_counter() - t1
            report = score_loaded(loaded, req.scoring, k, progress)
            report["timings_s"]["load"] = round(result_load, 3)
            cal = report["calibration"]
            how = f"criterion {report['criterion']}" + (
                f" on {cal['samples']} x {cal['seq_len']} tokens of {cal['data']}" if cal else "")
        if req.ratio is None:
            removed = removal_from_report(report, k)
        else:  # blocks of unequal size (MoE and dense mixed...): never remove more parameters than asked
            removed = fit_within_ratio(counts, req.ratio, lambda m: removal_from_report(report, m), k,
                                       f"criterion {report['criterion']}")
        how += f", --ratio {req.ratio:g}" if req.ratio is not None else f", --num-blocks {k}"
    plan = plan_from_blocks(counts, removed)
    # The config side of the cut, tried on a copy before any weights load: a position field the cut cannot
    # state (e.g. a period of MoE or no-RoPE blocks) is refused now, also on --dry-run.
    rewrite_config(copy.deepcopy(skeleton.config), plan.kept)
    result = PruneResult(
        model=source.spec, fingerprint=loaded.fingerprint if loaded else None, plan=plan,
        removed_original=[origin[i] for i in plan.removed], kept_original=[origin[i] for i in plan.kept],
        how=how, requested_ratio=req.ratio, scores=_brief(report),
    )
    result.timings["plan"] = time.perf_counter() - t0
    if req.dry_run:
        return result

    if loaded is None:
        t1 = time.perf_counter()
        loaded = load_model(req.model, req.settings)
        result.timings["load"] = time.perf_counter() - t1
    result.fingerprint = loaded.fingerprint
    t2 = time.perf_counter()
    drop_blocks(loaded.model, plan.removed)
    with atomic_dir(req.out, req.overwrite, _inputs(req)) as tmp:
        log.info("Saving the pruned model to %s", req.out, extra={"phase": True})
        save_model(loaded.model, loaded.tokenizer, tmp)
        result.timings["save"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        log.info("Reload check: loading the saved model with transformers and comparing logits", extra={"phase": True})
        result.reload_max_diff = verify_reload(tmp, loaded.model)
        result.timings["verify"] = time.perf_counter() - t3
        result.out = str(req.out)
        (tmp / "README.md").write_text(model_card(
            name=req.out.name, source_spec=source.hub_id or source.ref, removed=result.removed_original,
            kept=result.kept_original, num_blocks=len(origin), params_before=plan.params_before,
            params_after=plan.params_after, how=how, command=req.command, base_model=source.hub_id,
        ))
        result.timings["total"] = time.perf_counter() - t0
        write_manifest(
            tmp, "prune",
            options={"blocks": req.blocks, "ratio": req.ratio, "num_blocks": req.num_blocks,
                     "scores_dir": str(req.scores_dir) if req.scores_dir else None,
                     "scoring": asdict(req.scoring) if report and not req.scores_dir else None,
                     **asdict(req.settings), "overwrite": req.overwrite},
            source={**source.record(loaded.model.config), "fingerprint": loaded.fingerprint},
            results=result.as_dict(), timings=result.timings,
        )
    return result


def _inputs(req: PruneRequest) -> list[tuple[str, Any]]:
    """What a prune reads: the model, a --scores folder, calibration data (only when scoring now)."""
    found = model_inputs("input model", req.model) + [("--scores folder", req.scores_dir)]
    if req.blocks is None and req.scores_dir is None:
        cal = req.scoring.calibration
        found += data_inputs("calibration data", cal.data, cal.data_dir)
    return found


def _brief(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    keep = ("criterion", "scores", "order", "protected", "calibration", "timings_s")
    return {k: report.get(k) for k in keep}


__all__ = ["PruneRequest", "PruneResult", "prune", "resolve_source"]
