"""Forward FLOPs per token, the ideal speedup of a shorter model, and summary statistics: pure arithmetic.

The cost model is the usual one for decoder transformers (Kaplan et al. 2020, Hoffmann et al. 2022):
every weight of a matrix multiply costs one multiply-add (2 FLOPs) per token, and attention adds the
score and weighted-sum products against the context, ``2 x context x attn_dim`` FLOPs each per block
(a sliding-window block sees at most its window). Embedding lookups, norms, softmax and activations are
ignored: they are a small share of the work and do not change with depth pruning in a way that matters.
The output head is counted even when it is tied to the input embeddings: the matmul is done either way.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FlopsShape:
    """What one decoder's forward cost per token depends on.

    Attributes:
        block_params: parameters of all transformer blocks together.
        head_params: parameters of the output projection (vocab x hidden), tied or not.
        num_blocks: number of transformer blocks.
        attn_dim: width of the queries, ``num_attention_heads x head_dim``.
        windows: per block, the sliding-window size, or None for full attention (empty = all full).
    """

    block_params: int
    head_params: int
    num_blocks: int
    attn_dim: int
    windows: tuple[int | None, ...] = field(default_factory=tuple)


def attention_context_flops(shape: FlopsShape, context: int) -> int:
    """FLOPs per token of the attention products (Q K^T and A V) against ``context`` earlier tokens."""
    windows = shape.windows or (None,) * shape.num_blocks
    seen = sum(context if w is None else min(context, w) for w in windows)
    return 4 * shape.attn_dim * seen


def flops_per_token(shape: FlopsShape, context: int) -> int:
    """Forward FLOPs for one token that attends to ``context`` tokens: ``2 x (blocks + head) + attention``."""
    return 2 * (shape.block_params + shape.head_params) + attention_context_flops(shape, context)


def ideal_speedup(base_flops: float, flops: float) -> float:
    """Speedup of a model doing ``flops`` per token over one doing ``base_flops``, if time ~ FLOPs."""
    return base_flops / flops


def efficiency(speedup: float | None, ideal: float | None) -> float | None:
    """Measured speedup as a fraction of the ideal one (1.0 = all the saved FLOPs became saved time)."""
    if speedup is None or not ideal:
        return None
    return speedup / ideal


def ratio(value: float | None, base: float | None, higher_is_better: bool = True) -> float | None:
    """Speedup of ``value`` over ``base``: value/base for rates, base/value for times; None if unknown."""
    if value is None or base is None or value == 0 or base == 0:
        return None
    return value / base if higher_is_better else base / value


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median, min and max of ``values`` (None entries skipped; all None if nothing is left)."""
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(known), "min": min(known), "max": max(known)}
