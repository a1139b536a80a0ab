"""Parameter counts of a model: total, per block, embeddings, untied head and the rest (tied weights counted
once), the arithmetic ``--ratio`` is a fraction of."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shortllm.models.arch import blocks_of, spec_of


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of a model (tied weights counted once).

    ``total`` is the whole checkpoint: for a multimodal one its vision tower and projector too (also
    counted in ``other`` and, alone, in ``outside_language_model``). ``--ratio`` is a fraction of ``total``,
    as in the papers, which count every parameter of the model they prune.
    """

    total: int
    per_block: list[int]
    embeddings: int  # input embeddings (and learned position embeddings)
    head: int  # output projection when not tied to the embeddings
    other: int  # final norms and anything else outside the blocks
    outside_language_model: int = 0  # multimodal: vision tower, projector, ... (part of ``other``)

    @property
    def blocks(self) -> int:
        return sum(self.per_block)


def count_params(model: Any) -> ParamCount:
    """Count parameters: total, per block, embeddings, untied head, rest. Works on the meta device.

    For a multimodal checkpoint the total is the whole model (vision tower included) and
    ``outside_language_model`` what lies outside the language model (the module that holds the blocks,
    the embeddings and the head).
    """
    blocks = blocks_of(model)
    seen: set[int] = set()

    def numel(params: Iterable[Any]) -> int:
        n = 0
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    per_block = [numel(b.parameters()) for b in blocks.layers]
    embeddings = numel(model.get_input_embeddings().parameters())
    for name, module in model.named_modules():
        # Learned absolute position embeddings (gpt2 wpe, opt embed_positions) belong with the embeddings.
        if name.rsplit(".", 1)[-1] in ("wpe", "embed_positions") and not list(module.children()):
            embeddings += numel(module.parameters())
    out = model.get_output_embeddings()
    head = numel(out.parameters()) if out is not None else 0
    multimodal = bool(spec_of(model.config).text_config_key)
    language_rest = numel(blocks.parent.parameters()) if multimodal else 0  # the language model's final norm
    outside = numel(model.parameters())
    total = sum(per_block) + embeddings + head + language_rest + outside
    return ParamCount(total=total, per_block=per_block, embeddings=embeddings, head=head,
                      other=language_rest + outside, outside_language_model=outside if multimodal else 0)
