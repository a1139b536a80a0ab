"""Pruning plans: which blocks to remove, from explicit indices or a parameter ratio.

Ratio semantics (DESIGN.md): ``--ratio r`` removes the largest number of blocks whose parameters do not
exceed ``r`` x the model's total parameters (embeddings and head included) -- never more than asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from shortllm.errors import BlockSelectionError
from shortllm.models.config_rewrite import validate_indices
from shortllm.models.params import ParamCount
from shortllm.wording import plural

TABLE_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def parse_blocks(text: str) -> list[int]:
    """Parse ``"3,7,10-12"`` into ``[3, 7, 10, 11, 12]`` (order kept; ranges inclusive).

    Raises:
        BlockSelectionError: for anything that is not a comma-separated list of integers or ranges, a negative
            index, or an index given twice (no model needed: answered before anything loads).
    """
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise BlockSelectionError(f"empty entry in block list {text!r}", "write e.g. --blocks 3,7,10-12")
        lo, sep, hi = part.partition("-")
        try:
            if sep and lo.strip():
                start, end = int(lo), int(hi)
                if end < start:
                    raise BlockSelectionError(f"block range {part!r} runs backwards", "write it low-high")
                out.extend(range(start, end + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise BlockSelectionError(
                f"block index {part!r} is not an integer", "write e.g. --blocks 3,7,10-12"
            ) from None
    for i, block in enumerate(out):
        if block < 0:
            raise BlockSelectionError(f"block index {block} is negative", "blocks count from 0")
        if block in out[:i]:
            raise BlockSelectionError(f"block index {block} is given twice")
    return out


def check_ratio(ratio: float) -> None:
    """Refuse ratios outside (0, 1)."""
    if not 0.0 < ratio < 1.0:
        raise BlockSelectionError(
            f"--ratio {ratio:g} is outside (0, 1)", "give the fraction of parameters to remove, e.g. 0.2"
        )


def check_size(ratio: float | None, num_blocks: int | None) -> None:
    """The size request on its own (no model needed): at most one of ``--ratio`` / ``--num-blocks``, a ratio in
    (0, 1), a count of at least 1.

    Raises:
        BlockSelectionError: naming the option.
    """
    if ratio is not None and num_blocks is not None:
        raise BlockSelectionError("give --num-blocks or --ratio, not both")
    if ratio is not None:
        check_ratio(ratio)
    if num_blocks is not None and num_blocks < 1:
        raise BlockSelectionError(f"--num-blocks {num_blocks} must be at least 1")


def blocks_within_ratio(counts: ParamCount, ratio: float, order: Sequence[int] | None = None) -> int:
    """Largest k such that the first k blocks of ``order`` hold at most ``ratio`` x total parameters.

    ``order`` defaults to block index order (irrelevant when all blocks have the same size).
    """
    check_ratio(ratio)
    order = list(range(len(counts.per_block))) if order is None else list(order)
    budget = ratio * counts.total
    removed = 0
    k = 0
    for i in order:
        # Integer sums against the float budget, with a relative tolerance for ratios such as 0.3 whose
        # product with the total lands a hair below an exact multiple of the block size.
        if removed + counts.per_block[i] > budget * (1 + 1e-12):
            break
        removed += counts.per_block[i]
        k += 1
    return k


def smallest_first(counts: ParamCount) -> list[int]:
    """Block indices from the fewest parameters to the most (index order among equals)."""
    return sorted(range(len(counts.per_block)), key=lambda i: (counts.per_block[i], i))


def fits_ratio(counts: ParamCount, ratio: float, blocks: Sequence[int]) -> bool:
    """Whether removing ``blocks`` removes at most ``ratio`` x the total parameters."""
    return sum(counts.per_block[i] for i in blocks) <= ratio * counts.total * (1 + 1e-12)


def fit_within_ratio(counts: ParamCount, ratio: float, choose: Callable[[int], Sequence[int]],
                     k_max: int, criterion: str = "the criterion",
                     kept_back: Callable[[Sequence[int]], Sequence[int]] | None = None) -> list[int]:
    """The removal set of the largest ``k <= k_max`` that stays within ``ratio`` x the total parameters.

    This is what keeps the ratio promise ("never more parameters than asked") for every criterion whatever
    the block sizes (MoE and dense blocks mixed, a first dense block, shared experts): ``k_max`` counts the
    smallest blocks, and each criterion's own choice for ``k`` blocks is shrunk until it fits. Contiguous
    criteria re-plan their run for each ``k`` inside ``choose``, so the result is still one run.

    Args:
        counts: the model's parameter counts.
        ratio: the fraction of the total asked for, in (0, 1).
        choose: ``k -> removal set`` of the criterion; may raise :class:`BlockSelectionError` when it has
            no set of ``k`` blocks (e.g. no unprotected run of that length).
        k_max: the most blocks to try.
        kept_back: ``removal set -> the blocks of it that stay`` (``prune --replace block``: one trained block
            per removed run); the ratio counts only the blocks that really go, so the cut takes that many more.

    Raises:
        BlockSelectionError: no set the criterion chooses fits the ratio, not even one block.
    """
    for k in range(k_max, 0, -1):
        try:
            removed = sorted(choose(k))
        except BlockSelectionError:
            continue
        gone = [b for b in removed if b not in set(kept_back(removed))] if kept_back else removed
        if gone and fits_ratio(counts, ratio, gone):
            return removed
    smallest = min(counts.per_block)
    raise BlockSelectionError(
        f"--ratio {ratio:g} is too small for any block {criterion} would remove "
        f"({ratio * counts.total:,.0f} parameters allowed)",
        f"use --ratio {math.ceil(smallest / counts.total * 1000) / 1000:g} or more, or --num-blocks",
    )


def smallest_ratio_for_one(counts: ParamCount, order: Sequence[int] | None = None) -> float:
    """The smallest ratio (rounded up to 3 decimals) that removes at least one block (the smallest one, or
    the first of ``order``)."""
    first = counts.per_block[order[0]] if order else min(counts.per_block)
    return math.ceil(first / counts.total * 1000) / 1000


@dataclass(frozen=True)
class RatioRow:
    """What one ratio removes."""

    ratio: float
    num_blocks: int
    params_removed: int
    params_after: int
    achieved_ratio: float
    removes_all: bool  # --ratio would be refused: no block would be left


def ratio_row(counts: ParamCount, ratio: float, order: Sequence[int] | None = None) -> RatioRow:
    """The plan summary for one ratio."""
    order = list(range(len(counts.per_block))) if order is None else list(order)
    k = blocks_within_ratio(counts, ratio, order)
    removed = sum(counts.per_block[i] for i in order[:k])
    return RatioRow(ratio, k, removed, counts.total - removed, removed / counts.total,
                    removes_all=k == len(counts.per_block))


def ratio_table(counts: ParamCount, ratios: Sequence[float] = TABLE_RATIOS) -> list[dict]:
    """Rows of :func:`ratio_row` for each ratio, as dicts (for JSON and tables)."""
    return [asdict(ratio_row(counts, r)) for r in ratios]


@dataclass(frozen=True)
class Plan:
    """A resolved pruning plan over current block indices."""

    num_blocks: int
    removed: list[int]
    params_before: int
    params_after: int

    @property
    def kept(self) -> list[int]:
        gone = set(self.removed)
        return [i for i in range(self.num_blocks) if i not in gone]

    @property
    def achieved_ratio(self) -> float:
        return 1 - self.params_after / self.params_before


def plan_from_blocks(counts: ParamCount, blocks: Sequence[int]) -> Plan:
    """Plan removing exactly ``blocks``.

    Raises:
        BlockSelectionError: for bad indices, an empty list, or removing every block.
    """
    n = len(counts.per_block)
    if not blocks:
        raise BlockSelectionError("no blocks to remove were given", "write e.g. --blocks 20,21")
    removed = validate_indices(list(blocks), n)
    if len(removed) == n:
        raise BlockSelectionError(f"removing all {plural(n, 'block')} leaves no model",
                                  "keep at least one block")
    after = counts.total - sum(counts.per_block[i] for i in removed)
    return Plan(num_blocks=n, removed=removed, params_before=counts.total, params_after=after)


def blocks_requested(counts: ParamCount, ratio: float | None = None, num_blocks: int | None = None) -> int:
    """How many blocks ``--ratio`` or ``--num-blocks`` asks for (checked against the model).

    With a ratio this is the most blocks it could ever allow (the smallest ones); each criterion's own
    choice is then shrunk to fit by :func:`fit_within_ratio`. This is the one place that turns a size
    request into a block count: ``score``, ``prune`` and the ``auto`` search all call it.

    Raises:
        BlockSelectionError: bad ratio, a ratio too small for one block, removing every block.
    """
    n = len(counts.per_block)
    if ratio is None and num_blocks is None:
        raise BlockSelectionError("give --ratio or --num-blocks")
    check_size(ratio, num_blocks)
    if ratio is not None:
        k = blocks_within_ratio(counts, ratio, smallest_first(counts))
        if k == 0:
            raise BlockSelectionError(
                f"--ratio {ratio:g} is too small to remove one block ({min(counts.per_block):,} of "
                f"{counts.total:,} parameters)", f"use --ratio {smallest_ratio_for_one(counts):g} or more",
            )
    else:
        k = num_blocks
    if k >= n:
        what = f"--ratio {ratio:g}" if ratio is not None else f"--num-blocks {k}"
        raise BlockSelectionError(f"{what} would remove all {plural(n, 'block')}", "keep at least one block")
    return k
