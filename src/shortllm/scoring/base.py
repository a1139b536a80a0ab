"""What every criterion receives and returns, and the registry the CLI's choices come from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shortllm.errors import BlockSelectionError

Progress = Callable[[int, int], None]  # (done, total)


def row_chunks(n: int, size: int | None) -> list[slice]:
    """``[0, n)`` in slices of ``size`` rows (all at once for None): how ``--batch-size`` splits the windows."""
    step = size or n
    return [slice(s, s + step) for s in range(0, n, step)]


@dataclass
class ScoreContext:
    """Inputs of a criterion.

    Attributes:
        model: the loaded causal LM (eval mode).
        input_ids: ``[N, T]`` calibration windows, or None for data-free criteria.
        num_remove: how many blocks the plan will remove (iterative and contiguous criteria need it).
        candidates: blocks that may be removed (protection applied), ascending.
        norm: the p of ``magnitude``/``taylor``.
        batch_size: calibration rows per forward (None: all at once).
        progress: called as work advances.
        ratio: the ``--ratio`` asked for (None for a block count); with ``param_counts`` (a
            ``models.params.ParamCount``) it lets a search keep every candidate within the ratio.
        heldout_ids: ``[W, T]`` held-out windows, disjoint from ``input_ids`` (criteria with ``heldout``).
        search: a ``scoring.search.SearchOptions`` (``auto`` only).
        pattern_check: ``removal set -> bool``, False for a set that breaks the attention pattern
            (``--keep-attention-pattern``); None: no restriction.
    """

    model: Any
    input_ids: Any
    num_remove: int
    candidates: list[int]
    norm: int = 1
    batch_size: int | None = None
    progress: Progress = lambda done, total: None
    ratio: float | None = None
    param_counts: Any = None
    heldout_ids: Any = None
    search: Any = None
    pattern_check: Callable[[list[int]], bool] | None = None

    @property
    def num_blocks(self) -> int:
        from shortllm.models.arch import blocks_of

        return len(blocks_of(self.model).layers)


@dataclass
class ScoreResult:
    """A criterion's answer.

    Attributes:
        scores: one number per block, lower = less important (None where not defined, e.g. protected).
        order: every candidate block, least important first; the plan removes ``order[:k]``.
        extras: criterion-specific details (baseline perplexity, SLEB steps, angular distance table...).
    """

    scores: list[float | None]
    order: list[int]
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Criterion:
    """A registered criterion."""

    name: str
    run: Callable[[ScoreContext], ScoreResult]
    summary: str
    needs_data: bool = True
    contiguous: bool = False  # removes a contiguous run
    iterative: bool = False  # the order depends on how many blocks are removed
    protect_first: int = 0
    protect_last: int = 0
    reference: str = ""
    heldout: bool = False  # also needs held-out windows (ScoreContext.heldout_ids): the auto search


REGISTRY: dict[str, Criterion] = {}
# The built-in criteria, in the order help and errors list them (tests check it against the registry).
BUILTIN_CRITERIA = ("ppl", "taylor", "taylor+", "magnitude", "bi", "angular", "sleb", "chop", "auto")


def register(criterion: Criterion) -> Criterion:
    """Add a criterion to the registry (one line per criterion, at the bottom of its module)."""
    REGISTRY[criterion.name] = criterion
    return criterion


def _in_order(names) -> list[str]:
    return sorted(names, key=lambda n: (BUILTIN_CRITERIA.index(n) if n in BUILTIN_CRITERIA
                                        else len(BUILTIN_CRITERIA), n))


def check_criterion_name(name: str) -> None:
    """Refuse an unknown criterion name without loading the criteria (torch): the built-in names and any
    registered so far are known.

    Raises:
        BlockSelectionError: naming the known ones.
    """
    if name not in BUILTIN_CRITERIA and name not in REGISTRY:
        raise BlockSelectionError(f"unknown criterion '{name}'",
                                  f"choose one of {', '.join(_in_order({*BUILTIN_CRITERIA, *REGISTRY}))}")


def order_by_score(scores: list[float | None], candidates: list[int]) -> list[int]:
    """Candidates sorted by score ascending (least important first); ties by index."""
    return sorted(candidates, key=lambda i: (scores[i], i))
