"""The score job: calibration data -> a criterion -> a report (and, for ``shortllm score``, its files)."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shortllm.errors import BlockSelectionError, DataError
from shortllm.models.arch import blocks_of
from shortllm.models.loading import Loaded, LoadSettings
from shortllm.scoring.base import Criterion, Progress, ScoreContext
from shortllm.scoring.registry import get_criterion
from shortllm.scoring.options import PLUS, Calibration, ScoreOptions, check_options
from shortllm.scoring.search import heldout_windows
from shortllm.wording import plural

log = logging.getLogger(__name__)

SCORES_FILE = "scores.json"
ORDER_FILE = "block_order.csv"
PLOT_FILE = "scores.png"




def default_protection(criterion: Criterion, plus: bool = False, sleb_barriers: bool = True) -> tuple[int, int]:
    """(first, last) blocks protected when ``--protect-first/--protect-last`` are not given.

    The criterion's own default (taylor+: 4 and 2; sleb: 1 and 1, SLEB's ``early_barrier``/``latter_barrier``:
    its reference never removes the first or last still-present block, which are always blocks 0 and n-1), none
    for sleb with ``sleb_barriers`` off; ``plus`` raises them to at least 4 and 2, as Shortened LLaMA's released
    code does for every criterion (``--plus``).
    """
    first, last = criterion.protect_first, criterion.protect_last
    if criterion.name == "sleb" and not sleb_barriers:
        first, last = 0, 0
    if plus:
        first, last = max(first, PLUS[0]), max(last, PLUS[1])
    return first, last


def protected_blocks(criterion: Criterion, num_blocks: int, first: int | None, last: int | None) -> list[int]:
    """Blocks that may not be removed: the first ``first`` and last ``last`` (criterion defaults if None).

    Raises:
        BlockSelectionError: negative counts, or protecting every block.
    """
    first = criterion.protect_first if first is None else first
    last = criterion.protect_last if last is None else last
    if first < 0 or last < 0:
        raise BlockSelectionError("--protect-first/--protect-last must be >= 0")
    protected = sorted(set(range(min(first, num_blocks))) | set(range(max(num_blocks - last, 0), num_blocks)))
    if len(protected) >= num_blocks:
        raise BlockSelectionError(
            f"protecting {first} first and {last} last blocks leaves none of the {num_blocks} to remove",
            "lower --protect-first/--protect-last",
        )
    return protected


def check_candidates(num_remove: int, candidates: list[int], protected: list[int]) -> None:
    """Refuse a plan that needs more blocks than protection leaves."""
    if num_remove > len(candidates):
        raise BlockSelectionError(
            f"{plural(num_remove, 'block')} must be removed but only {len(candidates)} "
            f"{'is' if len(candidates) == 1 else 'are'} not protected "
            f"(protected: {', '.join(map(str, protected))})",
            "lower --protect-first/--protect-last or remove fewer blocks",
        )


def resolve_add_bos(cal: Calibration, config: Any) -> Calibration:
    """``cal`` with ``add_bos`` decided: as given, else on for the Gemma family (which needs BOS; logged)."""
    from dataclasses import replace

    from shortllm.models.arch import needs_bos

    if cal.add_bos is not None:
        return cal
    if needs_bos(config):
        log.info("The Gemma family needs BOS: every calibration window starts with it (--no-add-bos to turn off)")
        return replace(cal, add_bos=True)
    return replace(cal, add_bos=False)


def calibration_ids(loaded: Loaded, cal: Calibration) -> tuple[Any, dict[str, Any]]:
    """Sample the calibration windows for ``loaded``'s tokenizer.

    Returns:
        (``[samples, seq_len]`` token ids on the model's device, a JSON-ready description with fingerprints).

    Raises:
        DataError: no tokenizer, bad sizes, ``seq_len`` beyond the model's context, too little text.
    """
    from shortllm.data.context import check_context
    from shortllm.data.corpora import load_documents
    from shortllm.data.sampling import calibration_windows, check_calibration_sizes

    check_calibration_sizes(cal.samples, cal.seq_len)
    check_context(loaded.model.config, cal.seq_len, f"--seq-len {cal.seq_len}", "--seq-len",
                  model=loaded.source.spec)  # a window is --seq-len tokens, an --add-bos BOS included
    if loaded.tokenizer is None:
        raise DataError(f"model '{loaded.source.spec}' has no tokenizer to encode calibration text",
                        "use a model folder that includes its tokenizer files")
    cal = resolve_add_bos(cal, loaded.model.config)
    corpus = load_documents(cal.data, cal.split, data_dir=cal.data_dir, text_field=cal.text_field)
    ids = calibration_windows(loaded.tokenizer, corpus, n_samples=cal.samples, seq_len=cal.seq_len,
                              seed=cal.seed, add_bos=cal.add_bos)
    digest = hashlib.sha256(ids.cpu().numpy().tobytes()).hexdigest()[:16]
    info = {**asdict(cal), "corpus": corpus.name, "corpus_split": corpus.split, "corpus_source": corpus.source,
            "corpus_fingerprint": corpus.fingerprint(), "fingerprint": digest}
    device = next(loaded.model.parameters()).device
    return ids.to(device), info


def score_loaded(loaded: Loaded, options: ScoreOptions, num_remove: int,
                 progress: Progress = lambda d, t: None, ratio: float | None = None,
                 pattern_check: Any = None, runner: Any = None) -> dict[str, Any]:
    """Score every block of an already loaded model.

    Args:
        num_remove: blocks the plan will remove (used by iterative/contiguous criteria and the removal set);
            with ``ratio``, the most it could allow (the ``auto`` search fits every candidate to the ratio).
        ratio: the ``--ratio`` asked for, or None.
        pattern_check: ``removal set -> bool`` (``--keep-attention-pattern``), for the ``auto`` search.
        runner: ``(criterion, ctx) -> ScoreResult`` in place of ``criterion.run`` (the layer-by-layer sweeps
            of :func:`load_for_scoring`); the report's ``mode`` says which ran.

    Returns:
        The report: criterion, per-block scores, order (least important first), protected blocks,
        removal set, calibration description with fingerprints, extras and timings.
    """
    check_options(options)
    criterion = get_criterion(options.criterion)
    n = len(blocks_of(loaded.model).layers)
    if criterion.needs_data:  # decided once, so that every window sampled below agrees (held-out ones too)
        from dataclasses import replace

        options = replace(options, calibration=resolve_add_bos(options.calibration, loaded.model.config))
    first, last = default_protection(criterion, options.plus, options.sleb_barriers)
    protected = protected_blocks(criterion, n, first if options.protect_first is None else options.protect_first,
                                 last if options.protect_last is None else options.protect_last)
    candidates = [i for i in range(n) if i not in protected]
    check_candidates(num_remove, candidates, protected)
    t0 = time.perf_counter()
    ids, calibration = (None, None)
    if criterion.needs_data:
        cal = options.calibration
        log.info("Sampling %s of %d tokens from %s", plural(cal.samples, "calibration window"), cal.seq_len,
                 cal.data, extra={"phase": True})
        ids, calibration = calibration_ids(loaded, cal)
    heldout = None
    if criterion.heldout:  # the auto search: held-out windows from documents the scoring windows did not use
        from shortllm.models.params import count_params

        heldout, calibration["heldout"] = heldout_windows(loaded.tokenizer, options.calibration,
                                                          options.search.tokens)
        heldout = heldout.to(ids.device)
    t1 = time.perf_counter()
    ctx = ScoreContext(model=loaded.model, input_ids=ids, num_remove=num_remove, candidates=candidates,
                       norm=options.norm, batch_size=options.batch_size, progress=progress, ratio=ratio,
                       param_counts=count_params(loaded.model) if criterion.heldout else None,
                       heldout_ids=heldout, search=options.search, pattern_check=pattern_check)
    log.info("Scoring blocks (%s)", criterion.name, extra={"phase": True})  # the CLI counts the work in this phase
    result = runner(criterion, ctx) if runner is not None else criterion.run(ctx)
    t2 = time.perf_counter()
    return {
        "criterion": criterion.name,
        "reference": criterion.reference,
        "contiguous": criterion.contiguous,
        "iterative": criterion.iterative,
        "mode": "layer-by-layer" if runner is not None else "in-memory",
        "model": loaded.source.spec,
        "fingerprint": loaded.fingerprint,
        "num_blocks": n,
        "num_remove": result.extras.get("num_planned", num_remove),  # auto: the size of its winner
        "protected": protected,
        "plus": options.plus,
        "sleb_barriers": options.sleb_barriers if criterion.name == "sleb" else None,
        "scores": result.scores,
        "order": result.order,
        "removal": sorted(result.order[:result.extras.get("num_planned", num_remove)]),
        "norm": options.norm if criterion.name in ("magnitude", "taylor", "taylor+") else None,
        "calibration": calibration,
        "extras": result.extras,
        "timings_s": {"calibration": round(t1 - t0, 3), "scoring": round(t2 - t1, 3)},
    }


def load_for_scoring(spec: str | None, settings: LoadSettings, offload: bool | None,
                     criterion: str | None = None) -> tuple[Loaded, Any]:
    """Load a model for scoring, in memory or layer by layer (``scoring/sweep.py``).

    Args:
        offload: True/False force the mode (``--offload/--no-offload``); None chooses layer by layer when
            the weights would not fit in memory (and ``criterion`` has a layer-by-layer form).

    Returns:
        (the loaded model, or its skeleton with only embeddings and head loaded; the ``runner`` for
        :func:`score_loaded`, None in memory).
    """
    import functools

    from shortllm.models.loading import load_model
    from shortllm.scoring.sweep import choose_offload

    offload, why = choose_offload(spec, settings, offload, criterion)
    if not offload:
        log.debug("Scoring in memory: %s", why)
        return load_model(spec, settings), None
    from shortllm.scoring.sweep import open_stream
    from shortllm.scoring.sweep_criteria import run_layerwise

    log.info("Scoring layer by layer, one block in memory at a time: %s", why)
    loaded, stream = open_stream(spec, settings)
    return loaded, functools.partial(run_layerwise, stream)


def removal_from_report(report: dict[str, Any], k: int) -> list[int]:
    """The ``k`` blocks a saved score report removes (contiguous criteria re-plan the run for ``k``).

    Raises:
        BlockSelectionError: when the report cannot plan ``k`` blocks (protection, or an iterative
            criterion scored for fewer blocks).
    """
    from shortllm.scoring.similarity import best_run

    candidates = [i for i in range(report["num_blocks"]) if i not in report["protected"]]
    check_candidates(k, candidates, report["protected"])
    if report["criterion"] == "angular":
        distances = report["extras"]["distances"].get(str(k))
        start = best_run(distances, k, candidates) if distances else None
        if start is None:
            raise BlockSelectionError(f"no run of {k} unprotected contiguous blocks exists",
                                      "lower --protect-first/--protect-last or remove fewer blocks")
        return list(range(start, start + k))
    if report["iterative"] and k > report["num_remove"]:
        raise BlockSelectionError(
            f"the {report['criterion']} scores were computed for {plural(report['num_remove'], 'block')}, "
            f"not {k}",
            f"score again with --num-blocks {k}",
        )
    return sorted(report["order"][:k])


def write_score_files(folder: Path, report: dict[str, Any]) -> None:
    """scores.json, block_order.csv (one line, least important first, then protected) and scores.png."""
    import json

    from shortllm.scoring.plot import plot_scores

    (folder / SCORES_FILE).write_text(json.dumps(report, indent=2) + "\n")
    line = report["order"] + [i for i in report["protected"] if i not in report["order"]]
    (folder / ORDER_FILE).write_text(",".join(map(str, line)) + "\n")
    plot_scores(report, folder / PLOT_FILE)


def read_score_report(folder: Path, fingerprint: str | None) -> dict[str, Any]:
    """Read a ``shortllm score`` folder and check it was made for the same model.

    Raises:
        BlockSelectionError: missing/unreadable scores.json or a fingerprint from another model.
    """
    import json

    path = Path(folder) / SCORES_FILE
    try:
        report = json.loads(path.read_text())
        report["order"], report["protected"], report["num_blocks"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BlockSelectionError(f"--scores {folder}: cannot read {SCORES_FILE} ({err})",
                                  "pass a folder written by `shortllm score --out`") from err
    if fingerprint is not None and report.get("fingerprint") != fingerprint:
        raise BlockSelectionError(
            f"--scores {folder} was computed for another model ({report.get('model')}, fingerprint "
            f"{report.get('fingerprint')}), not this one ({fingerprint})",
            "score this model first, or pass the matching --model",
        )
    return report


__all__ = ["Calibration", "ScoreOptions", "LoadSettings", "score_loaded", "removal_from_report",
           "write_score_files", "read_score_report", "protected_blocks"]


@dataclass
class ScoreRequest:
    """The ``shortllm score`` job; built by ``cli/score.py``."""

    model: str | None
    out: Path | None = None
    num_blocks: int | None = None
    ratio: float | None = None
    options: ScoreOptions = field(default_factory=ScoreOptions)
    settings: LoadSettings = field(default_factory=LoadSettings)
    overwrite: bool = False


def run_score(req: ScoreRequest, progress: Progress = lambda d, t: None) -> dict[str, Any]:
    """Load the model, score its blocks, and (with ``out``) write scores.json, block_order.csv, scores.png
    and the manifest atomically. Returns the report (with ``out`` when written).

    Raises:
        ShortLLMError: bad options (checked before loading weights where possible), data or model problems.
    """
    from shortllm.models.loading import check_settings, load_skeleton
    from shortllm.models.params import count_params
    from shortllm.pruning.export import atomic_dir, check_output_dir, data_inputs, model_inputs, write_manifest
    from shortllm.pruning.plan import blocks_requested, check_size

    t0 = time.perf_counter()
    check_options(req.options)
    check_size(req.ratio, req.num_blocks)
    check_settings(req.settings)
    cal = req.options.calibration
    inputs = model_inputs("input model", req.model) + data_inputs("calibration data", cal.data, cal.data_dir)
    if req.out is not None:
        check_output_dir(req.out, req.overwrite, inputs)
    skeleton, source = load_skeleton(req.model, req.settings)
    counts = count_params(skeleton)
    if req.num_blocks is None and req.ratio is None:
        # Nothing asked: highlight what --ratio 0.2 would remove, kept within 1..n-1 for odd shapes.
        from shortllm.pruning.plan import blocks_within_ratio

        k = min(max(blocks_within_ratio(counts, 0.2), 1), len(counts.per_block) - 1)
    else:
        k = blocks_requested(counts, req.ratio, req.num_blocks)
    t1 = time.perf_counter()
    loaded, runner = load_for_scoring(req.model, req.settings, req.options.offload, req.options.criterion)
    t2 = time.perf_counter()
    report = score_loaded(loaded, req.options, k, progress, ratio=req.ratio, runner=runner)
    if req.ratio is not None:  # what prune would remove: never more parameters than asked
        from shortllm.pruning.plan import fit_within_ratio

        report["removal"] = fit_within_ratio(counts, req.ratio, lambda m: removal_from_report(report, m), k,
                                             f"criterion {report['criterion']}")
    report["timings_s"] = {"load": round(t2 - t1, 3), **report["timings_s"],
                           "total": round(time.perf_counter() - t0, 3)}
    if req.out is None:
        return report
    log.info("Saving the scores to %s", req.out, extra={"phase": True})
    with atomic_dir(req.out, req.overwrite, inputs) as tmp:
        report["out"] = str(req.out)
        write_score_files(tmp, report)
        write_manifest(tmp, "score", options={**asdict(req.options), "num_blocks": req.num_blocks,
                                              "ratio": req.ratio, **asdict(req.settings)},
                       source={**source.record(loaded.model.config), "fingerprint": loaded.fingerprint},
                       results=report, timings=report["timings_s"])
    return report
