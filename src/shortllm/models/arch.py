"""Architecture knowledge as data: where each decoder family keeps its blocks.

One table says, per Hugging Face ``model_type``, the dotted path of the ``nn.ModuleList`` of transformer
blocks, the config key holding the layer count, the config fields that hold one entry per layer, and any
embedding-scaling quirk. Nothing else in shortllm walks ``model.model.layers`` directly: it asks
:func:`blocks_of`. Unknown decoder families fall back to generic detection (the one ``ModuleList`` whose
length equals the layer count); encoder-only and encoder-decoder models are refused with a named error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shortllm.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchSpec:
    """How one decoder family is laid out.

    Attributes:
        blocks_path: dotted attribute path from the ``*ForCausalLM`` module to the ModuleList of blocks.
        layer_count_key: config attribute holding the number of blocks (after ``attribute_map``).
        per_layer_keys: config fields with one entry per block, filtered on surgery. Any other list
            whose length equals the layer count is filtered too (see ``surgery.filter_per_layer``).
        embedding_scale: how the embeddings are scaled before block 0 (informational; the scoring code
            captures block inputs with hooks, so the scale is always applied exactly as the model does).
    """

    blocks_path: str
    layer_count_key: str = "num_hidden_layers"
    per_layer_keys: tuple[str, ...] = ()
    embedding_scale: str | None = None


_LLAMA_LIKE = ArchSpec("model.layers")
_WITH_LAYER_TYPES = ArchSpec("model.layers", per_layer_keys=("layer_types",))

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _WITH_LAYER_TYPES,
    "mistral": _WITH_LAYER_TYPES,
    "mixtral": _WITH_LAYER_TYPES,
    "qwen2": _WITH_LAYER_TYPES,
    "qwen2_moe": ArchSpec("model.layers", per_layer_keys=("layer_types", "mlp_only_layers")),
    "qwen3": _WITH_LAYER_TYPES,
    "qwen3_moe": ArchSpec("model.layers", per_layer_keys=("layer_types", "mlp_only_layers")),
    "gemma": ArchSpec("model.layers", per_layer_keys=("layer_types",), embedding_scale="sqrt(hidden_size)"),
    "gemma2": ArchSpec("model.layers", per_layer_keys=("layer_types",), embedding_scale="sqrt(hidden_size)"),
    "gemma3_text": ArchSpec(
        "model.layers", per_layer_keys=("layer_types",), embedding_scale="sqrt(hidden_size)"
    ),
    "phi3": _WITH_LAYER_TYPES,
    "phi": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
    "olmo2": _WITH_LAYER_TYPES,
    "granite": ArchSpec("model.layers", per_layer_keys=("layer_types",), embedding_scale="embedding_multiplier"),
    "cohere": _LLAMA_LIKE,
    "stablelm": _LLAMA_LIKE,
    "starcoder2": _LLAMA_LIKE,
    "smollm3": ArchSpec("model.layers", per_layer_keys=("layer_types", "no_rope_layers")),
    "gpt2": ArchSpec("transformer.h", layer_count_key="n_layer"),
    "gptj": ArchSpec("transformer.h", layer_count_key="n_layer"),
    "bloom": ArchSpec("transformer.h", layer_count_key="n_layer"),
    "falcon": ArchSpec("transformer.h"),
    "gpt_neox": ArchSpec("gpt_neox.layers"),
    "opt": ArchSpec("model.decoder.layers"),
}

_LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_FUSED_QKV = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")

# model_type -> leaf names of the attention and MLP projections inside one block.
PROJECTIONS: dict[str, tuple[str, ...]] = {
    **{t: _LLAMA for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo",
                           "olmo2", "granite", "cohere", "stablelm", "smollm3")},
    # MoE families: attention plus the dense/shared MLP projections (fused expert weights are not Linear).
    "mixtral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2_moe": _LLAMA,
    "qwen3_moe": _LLAMA,
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "starcoder2": ("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gptj": ("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"),
    "bloom": _FUSED_QKV,
    "falcon": _FUSED_QKV,
    "gpt_neox": _FUSED_QKV,
    "opt": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
}


# Families that are not decoder-only language models: refused with a clear message.
ENCODER_ONLY = {
    "bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
    "camembert", "modernbert", "mpnet", "ernie", "xlm", "flaubert", "longformer", "megatron-bert",
}


@dataclass
class Blocks:
    """The located blocks of one model instance."""

    parent: Any  # module owning the ModuleList
    attr: str  # attribute name of the ModuleList on ``parent``
    layers: Any  # the torch.nn.ModuleList itself
    layer_count_key: str
    per_layer_keys: tuple[str, ...] = field(default_factory=tuple)


def supported_types() -> list[str]:
    """Model types with an entry in the architecture table, sorted."""
    return sorted(ARCHITECTURES)


def check_decoder(config: Any) -> None:
    """Refuse configs of encoder-only or encoder-decoder models.

    Raises:
        UnsupportedArchitectureError: naming the model type and what shortllm supports.
    """
    model_type = getattr(config, "model_type", "?")
    if model_type in ENCODER_ONLY or getattr(config, "is_encoder_decoder", False):
        kind = "an encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "an encoder-only"
        raise UnsupportedArchitectureError(
            f"'{model_type}' is {kind} model; shortllm prunes decoder-only causal language models",
            f"use a decoder model such as {', '.join(supported_types()[:6])}, ...",
        )


def layer_count_key(config: Any) -> str:
    """The config attribute that holds the number of blocks for this config's family."""
    spec = ARCHITECTURES.get(getattr(config, "model_type", ""))
    if spec is not None:
        return spec.layer_count_key
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(getattr(config, key, None), int):
            return key
    raise UnsupportedArchitectureError(
        f"cannot find the layer count in the config of model type '{getattr(config, 'model_type', '?')}'",
        f"supported types: {', '.join(supported_types())}",
    )


def num_layers(config: Any) -> int:
    """Number of transformer blocks the config declares."""
    return int(getattr(config, layer_count_key(config)))


def _get_path(root: Any, path: str) -> tuple[Any, str, Any]:
    parent = root
    *head, last = path.split(".")
    for name in head:
        parent = getattr(parent, name)
    return parent, last, getattr(parent, last)


def blocks_of(model: Any) -> Blocks:
    """Locate the ModuleList of transformer blocks of ``model``.

    Uses the architecture table, else generic detection: the single ``nn.ModuleList`` whose length equals
    the config's layer count.

    Raises:
        UnsupportedArchitectureError: for encoder models or when no unique block list is found.
    """
    import torch.nn as nn

    config = model.config
    check_decoder(config)
    model_type = getattr(config, "model_type", "?")
    spec = ARCHITECTURES.get(model_type)
    if spec is not None:
        try:
            parent, attr, layers = _get_path(model, spec.blocks_path)
        except AttributeError:
            layers = None
        if isinstance(layers, nn.ModuleList):
            return Blocks(parent, attr, layers, spec.layer_count_key, spec.per_layer_keys)

    count = num_layers(config)
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and count > 0:
            found.append(name)
    # Nested lists (e.g. experts inside a block) are not candidates when an outer list matches.
    outer = [n for n in found if not any(n != o and n.startswith(o + ".") for o in found)]
    if len(outer) != 1:
        raise UnsupportedArchitectureError(
            f"cannot locate the transformer blocks of model type '{model_type}'"
            + (f" (candidates: {', '.join(outer)})" if outer else ""),
            f"supported types: {', '.join(supported_types())}",
        )
    parent, attr, layers = _get_path(model, outer[0])
    return Blocks(parent, attr, layers, layer_count_key(config), ("layer_types",))
