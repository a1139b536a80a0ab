"""The ``--replace`` methods by name: ReplaceMe's linear map (``pruning/replace.py``) and LLM-Streamline's
trained block (``pruning/streamline.py``, whose torch training code loads only when the method runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shortllm.errors import BlockSelectionError
from shortllm.pruning.replace import Replacement, ReplaceContext, check_linear, linear_replace


def _streamline() -> Any:
    from shortllm.pruning import streamline

    return streamline


def _block_run(ctx: ReplaceContext) -> dict[str, Any]:
    return _streamline().block_replace(ctx)


def _block_check(config: Any, removed: Sequence[int]) -> None:
    _streamline().check_block(config, removed)


def _block_slots(removed: Sequence[int]) -> list[int]:
    return _streamline().replacement_slots(removed)


REPLACEMENTS: dict[str, Replacement] = {
    "linear": Replacement("linear", linear_replace, check_linear,
                          "a least-squares linear map per removed run, folded into the MLP output of the block "
                          "before", reference="ReplaceMe (arXiv 2505.02819)", protect_first=1),
    "block": Replacement("block", _block_run, _block_check,
                         "one block trained on the run's input -> output hidden states, in the run's last slot",
                         reference="LLM-Streamline (ICLR 2025, arXiv 2403.19135)", kept_back=_block_slots,
                         default_samples=256),
}


def get_replacement(name: str) -> Replacement:
    """Look a method up.

    Raises:
        BlockSelectionError: an unknown name, listing the known ones.
    """
    if name not in REPLACEMENTS:
        raise BlockSelectionError(f"unknown --replace method '{name}'",
                                  f"choose one of {', '.join(sorted(REPLACEMENTS))}")
    return REPLACEMENTS[name]
