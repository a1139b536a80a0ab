"""Generation with our settings only: a checkpoint's ``generation_config.json`` does not steer timings or texts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def plain_generation(model: Any) -> Iterator[None]:
    """Within the block, ``model.generate`` sees a generation config with the library's neutral values and the
    model's special tokens (eos, bos, pad) only.

    transformers fills every field that the ``GenerationConfig`` (or the keyword arguments) given to
    ``generate`` leaves unset from the model's own ``generation_config`` — a checkpoint's
    ``repetition_penalty``, ``no_repeat_ngram_size``, ``num_beams``, ``max_time`` or ``return_dict_in_generate``
    would then add logits processors to a timed decode, switch the sample text of ``eval --generate`` to beam
    search, or stop a run early. The model's config is restored afterwards, also on an error.
    """
    from transformers import GenerationConfig

    saved = model.generation_config
    tokens = {k: getattr(saved, k, None) for k in ("eos_token_id", "bos_token_id", "pad_token_id")}
    model.generation_config = GenerationConfig(**{k: v for k, v in tokens.items() if v is not None})
    try:
        yield
    finally:
        model.generation_config = saved
