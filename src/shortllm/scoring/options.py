"""How to score, as plain data with a pure check: light enough for the command line to check option values
before torch or the model's config load (``check_options``), and the one place the core checks them too."""

from __future__ import annotations

from dataclasses import dataclass, field

from shortllm.errors import BlockSelectionError
from shortllm.scoring.base import check_criterion_name


@dataclass(frozen=True)
class SearchOptions:
    """How ``auto`` searches.

    Attributes:
        tokens: held-out calibration tokens each candidate is measured on (rounded up to whole windows).
        refine: rounds of local search after the pick (0: none).
        sleb: also run ``sleb`` as a source (slow: k rounds of the ``ppl`` pass).
        batch_size: held-out windows per forward (bounds the logits' memory).
    """

    tokens: int = 4096
    refine: int = 0
    sleb: bool = False
    batch_size: int = 8


@dataclass
class Calibration:
    """Where calibration windows come from (paper defaults: 10 x 128 tokens, seed 1234)."""

    data: str = "pydoc"
    split: str = "train"
    data_dir: str | None = None
    text_field: str = "text"
    samples: int = 10
    seq_len: int = 128
    seed: int = 1234
    add_bos: bool | None = None  # None: on for the Gemma family (models/arch.py needs_bos), off otherwise


@dataclass
class ScoreOptions:
    """How to score: criterion, protection, norm, batch size, calibration."""

    criterion: str = "ppl"
    protect_first: int | None = None  # None: the criterion's default
    protect_last: int | None = None
    plus: bool = False  # Shortened LLaMA's "+": protect the first 4 and last 2 blocks, any criterion
    sleb_barriers: bool = True  # SLEB's reference never removes the first or last block
    norm: int = 1
    batch_size: int | None = None
    calibration: Calibration = field(default_factory=Calibration)
    search: SearchOptions = field(default_factory=SearchOptions)  # --criterion auto only
    offload: bool | None = None  # layer by layer (True), in memory (False), or by size (None): scoring/sweep.py


PLUS = (4, 2)  # Shortened LLaMA's "+" heuristic: the first 4 and the last 2 blocks are kept


def check_options(options: ScoreOptions) -> None:
    """Refuse values no model could make valid: an unknown criterion, negative protection, a --norm other than
    1 or 2, a --batch-size or --search-tokens below 1, a negative --refine.

    Raises:
        BlockSelectionError: naming the option and the fix.
    """
    check_criterion_name(options.criterion)
    for flag, value in (("--protect-first", options.protect_first), ("--protect-last", options.protect_last)):
        if value is not None and value < 0:
            raise BlockSelectionError(f"{flag} {value} must be 0 or more")
    if options.norm not in (1, 2):
        raise BlockSelectionError(f"--norm {options.norm} is not supported", "use --norm 1 or --norm 2")
    for flag, value, least in (("--batch-size", options.batch_size, 1), ("--search-tokens", options.search.tokens, 1),
                               ("--refine", options.search.refine, 0)):
        if value is not None and value < least:
            raise BlockSelectionError(f"{flag} {value} must be at least {least}",
                                      "leave it out for the default" if flag != "--refine" else "0 means none")
