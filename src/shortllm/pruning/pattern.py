"""Block roles a runtime derives from the block *index*, and the guard that keeps them when blocks go.

llama.cpp does not read Gemma 2/3's sliding/full attention pattern from the file: each architecture's loader
calls ``hparams.set_swa_pattern(period[, dense_first])`` (``src/llama-hparams.cpp``), which makes block ``i``
sliding-window iff ``period == 0 or i % period < period - 1`` (or ``i % period != 0`` dense-first), so the
global blocks are every ``period``-th one by position. Removing blocks renumbers the kept ones, and a kept
global block can land on a sliding position (or the reverse): the model loads and runs, silently wrong.
A Hugging Face checkpoint states its pattern per block (``layer_types``, filtered by surgery), but llama.cpp's
converter does not carry ``layer_types`` for these families, so the same rule applies again to an HF output
that is later converted.

This module is pure (no torch): the rule table (:data:`LLAMA_CPP_RULES`, checked against llama.cpp's
``src/llama-model.cpp`` / ``src/models/<arch>.cpp``), :func:`pattern_allows` and :func:`check_pattern` for a
given removal set, and :func:`restrict`, the selection that keeps every kept block's role
(``--keep-attention-pattern``), for any criterion's ranking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shortllm.errors import BlockSelectionError
from shortllm.wording import plural

RUNTIME = "llama.cpp"


@dataclass(frozen=True)
class PatternRule:
    """One role a runtime gives blocks by index: block ``i`` of ``n`` is *special* (global attention, no RoPE)
    under :meth:`special`.

    Attributes:
        arch: the GGUF architecture name (``general.architecture``).
        special_kind / other_kind: what the two roles are, for messages (``full-attention`` / ``sliding-window``).
        period: llama.cpp's ``set_swa_pattern`` period (0: every block is of the other kind).
        dense_first: the special block opens each period (``i % period == 0``) instead of closing it.
        only_at_count: the pattern exists only when the model has exactly this many blocks (EXAONE 4 32B).
        source: where llama.cpp sets it, for the manifest and docs.
    """

    arch: str
    special_kind: str
    other_kind: str
    period: int
    dense_first: bool = False
    only_at_count: int | None = None
    source: str = ""

    def special(self, i: int, n: int) -> bool:
        """Whether block ``i`` of a model with ``n`` blocks has the special role."""
        if self.only_at_count is not None and n != self.only_at_count:
            return True  # no pattern at this depth: llama.cpp runs every block as the special (full) kind
        if self.period <= 0:
            return False
        return i % self.period == 0 if self.dense_first else i % self.period == self.period - 1

    def describe(self) -> str:
        """``gemma3: every 6th block (i % 6 == 5) full-attention`` for messages and cards."""
        if self.period <= 0:
            return f"{self.arch}: every block {self.other_kind}"
        where = f"i % {self.period} == {0 if self.dense_first else self.period - 1}"
        nth = {1: "every", 2: "every 2nd", 3: "every 3rd"}.get(self.period, f"every {self.period}th")
        count = f", only with {self.only_at_count} blocks" if self.only_at_count is not None else ""
        return f"{self.arch}: {nth} block ({where}) {self.special_kind}{count}"


_FULL, _SWA, _CHUNK = "full-attention", "sliding-window", "chunked-attention"
_KEY_PATTERN = "{arch}.attention.sliding_window_pattern"
_KEY_WINDOW = "{arch}.attention.sliding_window"


@dataclass(frozen=True)
class _Entry:
    period: int
    other_kind: str = _SWA
    special_kind: str = _FULL
    dense_first: bool = False
    period_key: bool = False  # a scalar {arch}.attention.sliding_window_pattern overrides the period
    needs_window: bool = False  # only when {arch}.attention.sliding_window > 0
    off_when_window_zero: bool = False  # unless {arch}.attention.sliding_window is present and 0
    only_at_count: int | None = None
    source: str = ""


# What llama.cpp's loaders do, per GGUF architecture (read in ggml-org/llama.cpp src/llama-model.cpp and
# src/models/<arch>.cpp; the docs page lists them). Architectures not listed use no index-derived roles.
LLAMA_CPP_RULES: dict[str, tuple[_Entry, ...]] = {
    "gemma2": (_Entry(2, period_key=True, source="src/models/gemma2.cpp: set_swa_pattern(2), period from "
                      "gemma2.attention.sliding_window_pattern when set"),),
    "gemma3": (_Entry(6, period_key=True, source="gemma3 loader: set_swa_pattern(6), period from "
                      "gemma3.attention.sliding_window_pattern when set"),),
    "gemma-embedding": (_Entry(6, period_key=True, source="src/models/gemma-embedding.cpp: set_swa_pattern(6)"),),
    "cohere2": (_Entry(4, source="cohere2 loader: set_swa_pattern(4)"),),
    "olmo2": (_Entry(4, needs_window=True, source="olmo2 loader: set_swa_pattern(4) when sliding_window > 0 "
                     "(OLMo 3)"),),
    "gpt-oss": (_Entry(2, source="openai-moe loader: set_swa_pattern(2)"),),
    "llama4": (_Entry(4, other_kind=_CHUNK, off_when_window_zero=True,
                      source="llama4 loader: chunked attention set_swa_pattern(4) (3 chunked, 1 full), "
                             "unless llama4.attention.sliding_window is 0"),),
    "exaone4": (_Entry(4, only_at_count=64, source="exaone4 loader: set_swa_pattern(4) only when "
                       "n_layer == 64 (the 32B model)"),),
    "smollm3": (_Entry(4, special_kind="no-RoPE", other_kind="RoPE",
                       source="smollm3 loader: n_no_rope_layer_step = 4 (every 4th block without RoPE)"),),
}

# Hugging Face model types -> the GGUF architecture llama.cpp's converter writes for them.
HF_TO_GGUF_ARCH = {
    "gemma2": "gemma2", "gemma3": "gemma3", "gemma3_text": "gemma3", "cohere2": "cohere2", "olmo3": "olmo2",
    "gpt_oss": "gpt-oss", "llama4": "llama4", "llama4_text": "llama4", "exaone4": "exaone4", "smollm3": "smollm3",
}


def _build(arch: str, entry: _Entry, period: int) -> PatternRule:
    return PatternRule(arch=arch, special_kind=entry.special_kind, other_kind=entry.other_kind, period=period,
                       dense_first=entry.dense_first, only_at_count=entry.only_at_count, source=entry.source)


def rules_for_gguf(arch: str, metadata: Mapping[str, Any]) -> list[PatternRule]:
    """The index-derived roles llama.cpp gives the blocks of a GGUF of architecture ``arch``.

    Args:
        arch: ``general.architecture``.
        metadata: the file's key/value metadata (plain Python values: ints, lists).

    Returns:
        The rules that apply; empty for architectures without such roles, or when the file states the
        pattern per block (an array ``sliding_window_pattern``, which the writer filters like any per-block
        array).
    """
    rules = []
    window = metadata.get(_KEY_WINDOW.format(arch=arch))
    for entry in LLAMA_CPP_RULES.get(arch, ()):
        period = entry.period
        if entry.period_key:
            stated = metadata.get(_KEY_PATTERN.format(arch=arch))
            if isinstance(stated, (list, tuple)):
                continue  # per-block bools: the roles travel with the blocks
            if isinstance(stated, int) and not isinstance(stated, bool):
                period = stated
        if entry.needs_window and not (isinstance(window, (int, float)) and window > 0):
            continue
        if entry.off_when_window_zero and window == 0:
            continue
        rules.append(_build(arch, entry, period))
    return rules


def rules_for_hf(config: Any) -> list[PatternRule]:
    """The roles llama.cpp would give the blocks of a Hugging Face model once converted to GGUF.

    llama.cpp's converter does not carry ``layer_types`` for these families, so the arch default applies
    (OLMo 3 only with a sliding window).
    """
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    arch = HF_TO_GGUF_ARCH.get(getattr(config, "model_type", ""))
    if arch is None:
        return []
    window = getattr(config, "sliding_window", None)
    metadata = {_KEY_WINDOW.format(arch=arch): window if window is not None else 0} if arch == "olmo2" else {}
    return rules_for_gguf(arch, metadata)


@dataclass(frozen=True)
class Moved:
    """A kept block whose role changes: original index, new index, and the role before and after."""

    block: int
    new_index: int
    rule: PatternRule
    before: str
    after: str


def _role(rule: PatternRule, i: int, n: int) -> str:
    return rule.special_kind if rule.special(i, n) else rule.other_kind


def moved_blocks(removed: Sequence[int], num_blocks: int, rules: Sequence[PatternRule]) -> list[Moved]:
    """The kept blocks whose role under ``rules`` differs before and after removing ``removed``.

    Args:
        removed: block indices to remove (current indices, any order).
        num_blocks: the number of blocks before the cut.
        rules: from :func:`rules_for_gguf` / :func:`rules_for_hf`.
    """
    gone = set(removed)
    kept = [i for i in range(num_blocks) if i not in gone]
    out = []
    for rule in rules:
        for j, i in enumerate(kept):
            before, after = _role(rule, i, num_blocks), _role(rule, j, len(kept))
            if before != after:
                out.append(Moved(i, j, rule, before, after))
    return out


def pattern_allows(removed: Sequence[int], num_blocks: int, rules: Sequence[PatternRule]) -> bool:
    """Whether removing ``removed`` keeps every kept block's role under every rule (pure; for any caller
    that chooses blocks, e.g. a search over removal sets)."""
    return not moved_blocks(removed, num_blocks, rules)


def check_pattern(removed: Sequence[int], num_blocks: int, rules: Sequence[PatternRule],
                  origin: Sequence[int] | None = None, what: str = "the GGUF") -> None:
    """Refuse a removal set that moves an index-derived role.

    Args:
        origin: original index of each current block (names blocks by their original index in messages).
        what: what would be wrong (``the GGUF``, ``a GGUF converted from this checkpoint``).

    Raises:
        BlockSelectionError: one line naming the rule, the kept blocks that change role, and the fix.
    """
    moved = moved_blocks(removed, num_blocks, rules)
    if not moved:
        return
    name = (lambda i: origin[i]) if origin is not None else (lambda i: i)
    first = moved[0].rule
    shown = [f"{name(m.block)} ({m.before} -> {m.after})" for m in moved if m.rule == first]
    more = f" and {len(shown) - 4} more" if len(shown) > 4 else ""
    raise BlockSelectionError(
        f"removing blocks {', '.join(str(name(i)) for i in sorted(removed))} would move llama.cpp's pattern in "
        f"{what} ({first.describe()}): kept blocks {', '.join(shown[:4])}{more}",
        f"pass --keep-attention-pattern to choose only removals that keep every block's role, or remove whole "
        f"runs of {period_of(rules)} blocks or trailing blocks",
    )


def period_of(rules: Sequence[PatternRule]) -> int:
    """The smallest run length whose removal keeps every rule's pattern (lcm of the periods)."""
    return math.lcm(*(max(1, r.period) for r in rules)) if rules else 1


def restrict(order: Sequence[int], k: int, num_blocks: int, rules: Sequence[PatternRule]) -> list[int]:
    """The ``k`` blocks to remove that keep every kept block's role, closest to the criterion's choice.

    Among all removal sets of ``k`` blocks drawn from ``order`` (the removable blocks, least important first;
    protected blocks are simply absent) that keep every kept block's role, the one with the smallest sum of
    ranks in ``order`` -- the criterion's own first ``k`` whenever that set already keeps the pattern. Exact
    dynamic programme over (block, number removed so far): a block is kept only if its role is unchanged at its
    new index. Typical results are whole periods (e.g. 6 consecutive Gemma 3 blocks) or trailing blocks.

    Args:
        order: removable block indices, most removable first (a score report's ``order``).
        k: how many blocks to remove.
        num_blocks: the number of blocks before the cut.
        rules: the roles to keep (:func:`rules_for_gguf` / :func:`rules_for_hf`); none: ``order[:k]``.

    Returns:
        The removal set, sorted.

    Raises:
        BlockSelectionError: no set of ``k`` removable blocks keeps the pattern.
    """
    if not rules:
        if k > len(order):
            raise BlockSelectionError(f"only {plural(len(order), 'block')} can be removed, not {k}")
        return sorted(order[:k])
    rank = {b: r for r, b in enumerate(order)}
    n_after = num_blocks - k
    inf = math.inf
    # best[c] = (cost, removed) over the blocks seen so far with c of them removed
    best: list[tuple[float, tuple[int, ...]]] = [(0.0, ())] + [(inf, ())] * k
    for i in range(num_blocks):
        nxt: list[tuple[float, tuple[int, ...]]] = [(inf, ())] * (k + 1)
        for c, (cost, chosen) in enumerate(best):
            if cost == inf:
                continue
            j = i - c  # its index if kept
            if j < n_after and all(r.special(i, num_blocks) == r.special(j, n_after) for r in rules):
                if cost < nxt[c][0]:
                    nxt[c] = (cost, chosen)
            if c < k and i in rank and cost + rank[i] < nxt[c + 1][0]:
                nxt[c + 1] = (cost + rank[i], chosen + (i,))
        best = nxt
    cost, chosen = best[k]
    if cost == inf:
        raise BlockSelectionError(
            f"no {plural(k, 'block')} can be removed without moving llama.cpp's pattern "
            f"({'; '.join(r.describe() for r in rules)})",
            f"remove a multiple of {period_of(rules)} blocks, lower the protection, or drop "
            "--keep-attention-pattern",
        )
    return sorted(chosen)


def pattern_choice(choose: Callable[[int], Sequence[int]], order: Sequence[int], num_blocks: int,
                   rules: Sequence[PatternRule]) -> Callable[[int], list[int]]:
    """Wrap a criterion's ``k -> removal set`` so that it keeps every block's role (``--keep-attention-pattern``):
    the criterion's own set when it already does, else :func:`restrict` over its ranking ``order``. Without
    rules the criterion's choice is returned unchanged. Pass the result to ``plan.fit_within_ratio``."""
    def keeping(k: int) -> list[int]:
        own = sorted(choose(k))
        return own if not rules or pattern_allows(own, num_blocks, rules) else restrict(order, k, num_blocks, rules)
    return keeping


def pattern_record(removed: Sequence[int], num_blocks: int, rules: Sequence[PatternRule], *, guarded: bool,
                   output: str) -> dict[str, Any]:
    """What the manifest records about index-derived roles: which runtime rules were checked, and whether the
    cut keeps them.

    Args:
        guarded: whether a moved pattern would have been refused (GGUF output, or ``--keep-attention-pattern``).
        output: ``gguf`` or ``hf``.
    """
    moved = moved_blocks(removed, num_blocks, rules)
    return {
        "runtime": RUNTIME,
        "output": output,
        "rules": [{**asdict(r), "rule": r.describe()} for r in rules],
        "kept": not moved,
        "guarded": guarded,
        "moved_blocks": sorted({m.block for m in moved}),
    }


def pattern_note(record: dict[str, Any] | None) -> str:
    """A model-card paragraph saying which runtime patterns were checked and whether the cut keeps them."""
    if not record:
        return ""
    rules = "; ".join(r["rule"] for r in record["rules"])
    if record["kept"]:
        verdict = "every kept block keeps its role, so the pattern is right after the cut"
    else:
        verdict = (f"the cut moves it for kept blocks {', '.join(map(str, record['moved_blocks']))} "
                   "(transformers reads `layer_types` and is right; a llama.cpp conversion of this checkpoint "
                   "would not be)")
    return f"\nRuntime attention patterns checked ({record['runtime']}, by block index): {rules} -- {verdict}.\n"


__all__ = ["LLAMA_CPP_RULES", "HF_TO_GGUF_ARCH", "PatternRule", "Moved", "rules_for_gguf", "rules_for_hf",
           "moved_blocks", "pattern_allows", "check_pattern", "restrict", "period_of", "pattern_choice",
           "pattern_record"]
