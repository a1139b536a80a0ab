"""``auto``: choose the cut by measured quality instead of trusting one criterion.

Which one-shot criterion removes the right blocks differs from model to model (on the embedded SmolLM2 at
20%, ``angular`` wins, ``ppl`` is 25% worse and four criteria collapse the model). ``auto`` therefore
builds one candidate removal set per cheap criterion (ppl, bi, angular, magnitude, taylor, chop; sleb with
``--search-sleb``) plus every contiguous run of the requested length, drops duplicates, and measures each
candidate's perplexity on *held-out* calibration text (windows from documents none of the scoring windows
came from). The lowest wins; ``--refine N`` then tries up to N rounds of swapping one removed block for the
nearest kept block on either side, keeping a swap only while the held-out perplexity improves. The same
idea as SLEB's (arXiv 2402.09025) "measure, don't proxy", applied to whole candidate sets.

Every candidate obeys the size request exactly as the single criteria do: with ``--ratio`` each source's
choice is shrunk by :func:`shortllm.pruning.plan.fit_within_ratio`, and only candidates removing the most
blocks that fit are compared (a smaller cut would win on perplexity by removing less). Protected blocks
are never candidates; a ``--keep-attention-pattern`` check, when given, filters every set.

Evaluation is exact and cheap (``capture.py``): one full pass caches every block's input on the held-out
windows; "model without S" then starts from the cached input of S's first block.

Import direction: ``scoring/run.py`` -> ``scoring/search.py`` -> ``scoring/{base,capture,perplexity}`` and
``pruning/plan.py``; nothing here imports ``scoring/run.py`` or ``pruning/run.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shortllm.errors import BlockSelectionError, DataError
from shortllm.scoring.base import REGISTRY, Criterion, ScoreContext, ScoreResult, register
from shortllm.scoring.options import SearchOptions
from shortllm.wording import plural

log = logging.getLogger(__name__)

SOURCES = ("ppl", "bi", "angular", "magnitude", "taylor", "chop")
RUN_SOURCE = "contiguous run"


# ---------------------------------------------------------------------------------------------- pure logic

def contiguous_runs(candidates: Sequence[int], length: int) -> list[list[int]]:
    """Every run of ``length`` consecutive blocks that are all candidates, first block ascending."""
    allowed = set(candidates)
    top = max(allowed, default=-1)
    return [list(range(s, s + length)) for s in range(top + 2 - length)
            if length > 0 and all(b in allowed for b in range(s, s + length))]


def source_choice(result: ScoreResult, criterion: Criterion, candidates: Sequence[int], m: int) -> list[int]:
    """The ``m`` blocks a criterion's result removes (``angular`` re-plans its run for ``m``).

    Raises:
        BlockSelectionError: no choice of ``m`` blocks (no unprotected run; an iterative order too short).
    """
    from shortllm.scoring.similarity import best_run

    distances = result.extras.get("distances")
    if distances is not None:
        table = distances.get(str(m))
        start = best_run(table, m, candidates) if table else None
        if start is None:
            raise BlockSelectionError(f"no run of {m} unprotected contiguous blocks exists")
        return list(range(start, start + m))
    if m > len(result.order) or (criterion.iterative and m > result.extras.get("scored_for", m)):
        raise BlockSelectionError(f"{criterion.name} has no choice of {plural(m, 'block')}")
    return sorted(result.order[:m])


def swaps(removed: Sequence[int], candidates: Sequence[int]) -> list[list[int]]:
    """Neighbouring sets: one removed block traded for the nearest kept candidate on either side of it."""
    gone, allowed = set(removed), set(candidates)
    out: list[list[int]] = []
    for b in sorted(gone):
        for step in (-1, 1):
            c = b + step
            while c in gone:
                c += step
            if c in allowed:
                new = sorted((gone - {b}) | {c})
                if new not in out:
                    out.append(new)
    return out


@dataclass
class Candidate:
    """One removal set, the sources that proposed it, and its held-out perplexity."""

    removed: list[int]
    sources: list[str]
    heldout_ppl: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "sources": self.sources,
                "heldout_ppl": None if self.heldout_ppl is None else round(self.heldout_ppl, 4)}


def merge_candidates(proposals: Sequence[tuple[str, list[int]]]) -> list[Candidate]:
    """De-duplicate ``(source, removal set)`` pairs, keeping every source's name, and keep only the sets
    removing the most blocks (a smaller cut is not the size asked for; it would win by removing less)."""
    by_set: dict[tuple[int, ...], Candidate] = {}
    for source, removed in proposals:
        key = tuple(sorted(removed))
        if key in by_set:
            if source not in by_set[key].sources:
                by_set[key].sources.append(source)
        else:
            by_set[key] = Candidate(list(key), [source])
    most = max((len(k) for k in by_set), default=0)
    return [c for key, c in by_set.items() if len(key) == most]


# ---------------------------------------------------------------------------------------------- plumbing

class _Recording(list):
    """A document list that records which indices were read (to replay which documents a sampling used)."""

    def __init__(self, docs: Sequence[str]):
        super().__init__(docs)
        self.read: set[int] = set()

    def __getitem__(self, i):
        if isinstance(i, int):
            self.read.add(i % len(self))
        return super().__getitem__(i)


def heldout_documents(documents: list[str], read: set[int]) -> list[str]:
    """The documents held-out text may come from: not read by the scoring windows (indices ``read``), and not a
    copy of one that was, nor of an earlier held-out one (text compared with whitespace collapsed): corpora
    can repeat documents, and a repeat would put scoring text into the held-out set."""
    def key(text: str) -> str:
        return " ".join(text.split())

    seen = {key(documents[i]) for i in read}
    rest = []
    for i, doc in enumerate(documents):
        k = key(doc) if doc else ""
        if i in read or not k or k in seen:
            continue
        seen.add(k)
        rest.append(doc)
    return rest


def heldout_windows(tokenizer: Any, calibration: Any, tokens: int) -> tuple[Any, dict[str, Any]]:
    """Held-out windows for ``auto``: disjoint from the scoring windows by document.

    The scoring windows' sampling (:func:`shortllm.data.sampling.calibration_windows`, same corpus, sizes
    and seed) is replayed on a recording document list; every document it read is excluded, and
    ``ceil(tokens / seq_len)`` windows are sampled from the others with seed ``seed + 1``.

    Args:
        tokenizer: the model's tokenizer.
        calibration: a ``scoring.run.Calibration`` (data, split, data_dir, text_field, samples, seq_len, seed,
            add_bos).
        tokens: how many held-out tokens to draw.

    Returns:
        (``[windows, seq_len]`` token ids, a JSON-ready description).

    Raises:
        DataError: ``tokens`` < 1, or no document is left once the scoring windows' are excluded.
    """
    import hashlib

    from shortllm.data.corpora import Corpus, load_documents
    from shortllm.data.sampling import calibration_windows

    if tokens < 1:
        raise DataError(f"--search-tokens {tokens} must be at least 1", "the default is 4096")
    cal = calibration
    corpus = load_documents(cal.data, cal.split, data_dir=cal.data_dir, text_field=cal.text_field)
    recording = _Recording(corpus.documents)
    calibration_windows(tokenizer, Corpus(recording, corpus.name, corpus.split, corpus.source),
                        n_samples=cal.samples, seq_len=cal.seq_len, seed=cal.seed, add_bos=cal.add_bos)
    rest = heldout_documents(corpus.documents, recording.read)
    if not rest:
        raise DataError(
            f"{cal.data} has no document left for held-out text once the {plural(cal.samples, 'scoring window')} "
            "are set aside", "use a calibration corpus with more documents (--data)")
    windows = math.ceil(tokens / cal.seq_len)
    ids = calibration_windows(tokenizer, Corpus(rest, corpus.name, corpus.split, corpus.source),
                              n_samples=windows, seq_len=cal.seq_len, seed=cal.seed + 1, add_bos=cal.add_bos)
    info = {"windows": windows, "seq_len": cal.seq_len, "tokens": windows * cal.seq_len, "seed": cal.seed + 1,
            "documents_excluded": len(recording.read), "documents_available": len(rest),
            "duplicates_dropped": sum(1 for i, d in enumerate(corpus.documents) if i not in recording.read and d)
            - len(rest),
            "fingerprint": hashlib.sha256(ids.numpy().tobytes()).hexdigest()[:16]}
    return ids, info


class HeldoutEvaluator:
    """Held-out perplexity of "the model without S", exact and without copies.

    One full pass caches the input of every block on the held-out windows; a set S is then evaluated from
    the cached input of its first block, the blocks of S bypassed (``capture.logits_from``).
    """

    def __init__(self, model: Any, input_ids: Any, batch_size: int = 8):
        from shortllm.scoring.capture import full_pass
        from shortllm.scoring.perplexity import nll_sum, perplexity

        self.model, self.ids, self.step = model, input_ids, max(1, batch_size)
        self.cache: dict[tuple[int, ...], float] = {}
        rows = range(0, input_ids.shape[0], self.step)
        self.inputs: list[list[Any]] = []
        total, count = 0.0, 0
        for start in rows:  # per chunk, so the full-vocabulary logits of one chunk at a time are alive
            fp = full_pass(model, input_ids[start:start + self.step], keep_logits=True)
            nll, n = nll_sum(fp.logits, input_ids[start:start + self.step])
            total, count = total + nll, count + n
            self.inputs.append(fp.inputs)
        self.baseline = perplexity(total, count)

    def __call__(self, removed: Sequence[int]) -> float:
        """Held-out perplexity with ``removed`` bypassed (memoised per set)."""
        from shortllm.scoring.capture import logits_from
        from shortllm.scoring.perplexity import nll_sum, perplexity

        key = tuple(sorted(removed))
        if key not in self.cache:
            first = key[0]
            total, count = 0.0, 0
            for chunk, start in enumerate(range(0, self.ids.shape[0], self.step)):
                ids = self.ids[start:start + self.step]
                logits = logits_from(self.model, ids, first, self.inputs[chunk][first], skip=key)
                nll, n = nll_sum(logits, ids)
                total, count = total + nll, count + n
            self.cache[key] = perplexity(total, count)
        return self.cache[key]


def _restrict(ctx: ScoreContext) -> Callable[[list[int]], bool]:
    """Whether a removal set is allowed beyond protection: the ``--keep-attention-pattern`` check."""
    check = getattr(ctx, "pattern_check", None)
    return (lambda removed: True) if check is None else check


def _fit(ctx: ScoreContext, choose: Callable[[int], Sequence[int]], name: str) -> list[int]:
    """A source's removal set for the size asked: ``k`` blocks, or the largest that fits ``--ratio``."""
    allowed = _restrict(ctx)

    def chosen(m: int) -> list[int]:
        removed = sorted(choose(m))
        if not allowed(removed):
            raise BlockSelectionError(f"{name}'s {plural(m, 'block')} break the attention pattern")
        return removed

    if ctx.ratio is None or ctx.param_counts is None:
        return chosen(ctx.num_remove)
    from shortllm.pruning.plan import fit_within_ratio

    return fit_within_ratio(ctx.param_counts, ctx.ratio, chosen, ctx.num_remove, f"criterion {name}")


def _proposals(ctx: ScoreContext, sources: Sequence[str], timings: dict[str, float],
               scores_out: dict[str, ScoreResult]) -> list[tuple[str, list[int]]]:
    found: list[tuple[str, list[int]]] = []
    for k, name in enumerate(sources, 1):
        criterion = REGISTRY[name]  # registered with this module by scoring.registry
        t = time.perf_counter()
        # a phase each, counted by the source's own progress (the ppl pass: one count per candidate block)
        log.info("auto: scoring with %s (source %d of %d)", name, k, len(sources), extra={"phase": True})
        result = criterion.run(ctx)
        result.extras.setdefault("scored_for", ctx.num_remove)
        timings[name] = round(time.perf_counter() - t, 3)
        scores_out[name] = result
        try:
            found.append((name, _fit(ctx, lambda m: source_choice(result, criterion, ctx.candidates, m), name)))
        except BlockSelectionError as err:
            log.info("auto: %s proposes no set (%s)", name, err.message if hasattr(err, "message") else err)
    for m in range(ctx.num_remove, 0, -1):  # the longest contiguous runs that fit
        runs = [r for r in contiguous_runs(ctx.candidates, m) if _restrict(ctx)(r)
                and (ctx.ratio is None or ctx.param_counts is None or _fits(ctx, r))]
        if runs:
            found.extend((RUN_SOURCE, r) for r in runs)
            break
    return found


def _fits(ctx: ScoreContext, removed: Sequence[int]) -> bool:
    from shortllm.pruning.plan import fits_ratio

    return fits_ratio(ctx.param_counts, ctx.ratio, removed)


def auto_criterion(ctx: ScoreContext) -> ScoreResult:
    """Pick the candidate removal set with the lowest held-out perplexity (see the module docstring).

    Needs ``ctx.heldout_ids`` (``[W, T]``), and ``ctx.ratio`` with ``ctx.param_counts`` for a ratio request.

    Returns:
        Scores: the ``ppl`` source's per-block calibration perplexities. Order: the winner's blocks (by that
        score), then the other candidates. Extras: every candidate with its sources and held-out perplexity,
        the winner and why, the refinement steps, timings.

    Raises:
        BlockSelectionError: no source proposes a set of the size asked.
    """
    opts: SearchOptions = ctx.search or SearchOptions()
    if ctx.heldout_ids is None:
        raise DataError("auto needs held-out calibration windows", "run it through shortllm score or prune")
    sources = [*SOURCES, *(["sleb"] if opts.sleb else [])]
    timings: dict[str, float] = {}
    results: dict[str, ScoreResult] = {}
    t0 = time.perf_counter()
    proposals = _proposals(ctx, sources, timings, results)
    candidates = merge_candidates(proposals)
    if not candidates:
        raise BlockSelectionError("no criterion proposes a removal set of the size asked",
                                  "lower --protect-first/--protect-last, or remove fewer blocks")
    t1 = time.perf_counter()
    log.info("auto: held-out perplexity of %s", plural(len(candidates), "candidate cut"), extra={"phase": True})
    ctx.progress(0, len(candidates))
    evaluate = HeldoutEvaluator(ctx.model, ctx.heldout_ids, opts.batch_size)
    for done, cand in enumerate(candidates, 1):
        cand.heldout_ppl = evaluate(cand.removed)
        ctx.progress(done, len(candidates))
    candidates.sort(key=lambda c: (c.heldout_ppl, c.removed))
    best = candidates[0]
    winner, winner_ppl, steps = list(best.removed), best.heldout_ppl, []
    t_refine = time.perf_counter()
    for round_ in range(1, max(opts.refine, 0) + 1):
        around = [s for s in swaps(winner, ctx.candidates) if _restrict(ctx)(s)
                  and (ctx.ratio is None or ctx.param_counts is None or _fits(ctx, s))]
        log.info("auto: refinement round %d of at most %d (%s)", round_, opts.refine, plural(len(around), "swap"),
                 extra={"phase": True})
        tried = []
        ctx.progress(0, len(around))
        for done, s in enumerate(around, 1):
            tried.append((evaluate(s), s))
            ctx.progress(done, len(around))
        tried.sort(key=lambda x: (x[0], x[1]))
        if not tried or tried[0][0] >= winner_ppl:
            break
        winner_ppl, winner = tried[0]
        steps.append({"removed": winner, "heldout_ppl": round(winner_ppl, 4), "tried": len(tried)})
    t2 = time.perf_counter()
    ppl = results.get("ppl")
    scores = list(ppl.scores) if ppl else [None] * ctx.num_blocks
    rank = {b: (scores[b] if scores[b] is not None else math.inf, b) for b in range(ctx.num_blocks)}
    rest = sorted((b for b in ctx.candidates if b not in winner), key=lambda b: rank[b])
    source = "refinement of " + "+".join(best.sources) if steps else "+".join(best.sources)
    why = (f"lowest held-out perplexity ({winner_ppl:.4g}, full model {evaluate.baseline:.4g}) of "
           f"{plural(len(candidates), 'candidate')} on {ctx.heldout_ids.numel():,} held-out tokens"
           + (f", after {plural(len(steps), 'refinement step')}" if steps else ""))
    extras = {
        "winner": {"removed": winner, "source": source, "heldout_ppl": round(winner_ppl, 4), "why": why},
        "candidates": [c.as_dict() for c in candidates],
        "refine_steps": steps, "baseline_heldout_ppl": round(evaluate.baseline, 4), "heldout_tokens": opts.tokens,
        "baseline_ppl": ppl.extras.get("baseline_ppl") if ppl else None,
        "scored_for": len(winner), "num_planned": len(winner),
        "timings_s": {"sources": timings, "evaluation": round(t_refine - t1, 3), "refine": round(t2 - t_refine, 3),
                      "total": round(t2 - t0, 3)},
    }
    return ScoreResult(scores, sorted(winner, key=lambda b: rank[b]) + rest, extras)


register(Criterion("auto", auto_criterion,
                   "every cheap criterion's cut (and every contiguous run), the lowest held-out perplexity wins",
                   iterative=True, heldout=True,
                   reference="candidates from every criterion, chosen on held-out perplexity (SLEB's measure)"))
