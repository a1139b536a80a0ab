"""Which blocks a prune request removes: ``--blocks`` as given, or ``--ratio``/``--num-blocks`` ranked by a
criterion (scored now) or a saved ``--scores`` report. HF prune (``pruning/run.py``) and GGUF prune
(``pruning/gguf.py``) both choose here; the size arithmetic is ``pruning/plan.py``'s."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shortllm.errors import BlockSelectionError
from shortllm.models.loading import Loaded
from shortllm.models.params import ParamCount
from shortllm.pruning.pattern import PatternRule, pattern_allows, pattern_choice
from shortllm.pruning.plan import blocks_requested, fit_within_ratio
from shortllm.pruning.replacements import get_replacement
from shortllm.scoring.base import Progress
from shortllm.scoring.run import load_for_scoring, read_score_report, removal_from_report, score_loaded

if TYPE_CHECKING:
    from shortllm.pruning.request import PruneRequest


def blocks_to_remove(req: PruneRequest, counts: ParamCount) -> int:
    """How many blocks ``--ratio`` or ``--num-blocks`` asks for (checked against the model).

    Raises:
        BlockSelectionError: bad ratio, a ratio too small for one block, removing every block.
    """
    return blocks_requested(counts, req.ratio, req.num_blocks)  # the arithmetic lives in pruning/plan.py


def check_mode(req: PruneRequest) -> None:
    """Exactly one of ``--blocks``, ``--ratio``, ``--num-blocks``; ``--scores`` only with a size.

    Raises:
        BlockSelectionError: none or several given, or ``--scores`` with ``--blocks``.
    """
    given = [name for name, v in (("--blocks", req.blocks), ("--ratio", req.ratio), ("--num-blocks", req.num_blocks))
             if v is not None]
    if len(given) != 1:
        raise BlockSelectionError(
            "give exactly one of --blocks, --ratio, --num-blocks" + (f" (got {', '.join(given)})" if given else ""),
            "e.g. --ratio 0.2",
        )
    if req.blocks is not None and req.scores_dir is not None:
        raise BlockSelectionError("--scores only applies with --ratio or --num-blocks")


def select_blocks(req: PruneRequest, counts: ParamCount, rules: list[PatternRule], progress: Progress,
                  fingerprint_of: Callable[[], str], scored: str = "") -> tuple[list[int], str, Any, Loaded | None]:
    """The cut a request asks for: ``--blocks`` as given, or ``--ratio``/``--num-blocks`` from a ``--scores``
    report or from scoring now (HF prune and GGUF prune both come here).

    Args:
        fingerprint_of: the source's fingerprint, computed only when a ``--scores`` report must match it.
        scored: words after the criterion in the "how" line (GGUF: " (the dequantized model)").

    Returns:
        (the removal set, sorted; with ``--replace block`` it includes the blocks that stay as trained stand-ins;
        the "how" line for the manifest and card; the score report or None; the model scoring loaded in memory,
        for surgery to reuse, or None when nothing was loaded or it was scored layer by layer).

    Raises:
        BlockSelectionError: a bad size, or no set of the criterion that fits ``--ratio``.
    """
    if req.blocks is not None:
        return sorted(req.blocks), "blocks chosen by hand (--blocks)", None, None
    n = len(counts.per_block)
    k = blocks_to_remove(req, counts)
    loaded = None
    if req.scores_dir is not None:
        report = read_score_report(req.scores_dir, fingerprint_of())
        how = f"criterion {report['criterion']} from {req.scores_dir}"
    else:
        t1 = time.perf_counter()
        loaded, runner = load_for_scoring(req.model, req.settings, req.scoring.offload, req.scoring.criterion)
        load_s = time.perf_counter() - t1
        keeps = (lambda r: pattern_allows(r, n, rules)) if req.keep_attention_pattern and rules else None
        report = score_loaded(loaded, req.scoring, k, progress, ratio=req.ratio, runner=runner, pattern_check=keeps)
        report["timings_s"]["load"] = round(load_s, 3)
        if runner is not None:  # scored layer by layer: only a skeleton is loaded, surgery reads the files
            loaded = None
        cal = report["calibration"]
        how = f"criterion {report['criterion']}{scored}" + (
            f" on {cal['samples']} x {cal['seq_len']} tokens of {cal['data']}" if cal else "")
        if "winner" in report["extras"]:  # auto: which candidate won, and why
            win = report["extras"]["winner"]
            how += f" (chose the set of {win['source']}: {win['why']})"
    choose = choose_removal(req, report, n, rules)
    if req.ratio is None:
        removed = choose(k)
    else:  # blocks of unequal size (MoE and dense mixed...): never remove more parameters than asked
        kept_back = get_replacement(req.replace).kept_back if req.replace else None
        removed = fit_within_ratio(counts, req.ratio, choose, k if kept_back is None else n - 1,
                                   f"criterion {report['criterion']}", kept_back=kept_back)
    how += f", --ratio {req.ratio:g}" if req.ratio is not None else f", --num-blocks {k}"
    if req.keep_attention_pattern and rules:
        how += ", --keep-attention-pattern"
    return sorted(removed), how, report, loaded


def choose_removal(req: PruneRequest, report: dict[str, Any], n: int, rules: list[PatternRule]) -> Any:
    """``k -> removal set`` from a score report; with ``--keep-attention-pattern`` only sets that keep every kept
    block's llama.cpp role (:func:`pattern_choice`)."""
    own = lambda m: removal_from_report(report, m)  # noqa: E731
    return pattern_choice(own, report["order"], n, rules) if req.keep_attention_pattern else own


def brief_report(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the manifest keeps of a score report (with ``auto``: its candidates and winner); None for None."""
    if report is None:
        return None
    keep = ("criterion", "mode", "scores", "order", "protected", "calibration", "timings_s")
    brief = {k: report.get(k) for k in keep}
    extras = report.get("extras") or {}
    if "winner" in extras:  # --criterion auto: every candidate, the refinement and the winner with its reason
        brief["search"] = {k: extras.get(k) for k in ("winner", "candidates", "refine_steps", "baseline_heldout_ppl")}
    return brief
