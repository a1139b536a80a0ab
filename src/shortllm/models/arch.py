"""Architecture knowledge as data: where each decoder family keeps its blocks, and which config fields
name blocks by position.

One table says, per Hugging Face ``model_type``, the dotted path of the ``nn.ModuleList`` of transformer
blocks, the config key holding the layer count, and the three kinds of config fields tied to block
positions, which surgery must rewrite when blocks are removed:

(a) per-block lists (``layer_types``, ``no_rope_layers``): one entry per block, filtered to the kept blocks;
(b) lists of block indices (``mlp_only_layers``, ``moe_layers``): renumbered to the kept blocks;
(c) position rules: thresholds, ranges and periods over block positions (``first_k_dense_replace``,
    ``decoder_sparse_step``, ``max_window_layers``, ...), each a :class:`PositionRule` whose pattern
    (:func:`position_pattern`) surgery keeps attached to the same blocks, or refuses by name.

Nothing else in shortllm walks ``model.model.layers`` directly: it asks :func:`blocks_of`. Unknown decoder
families fall back to generic detection (the one ``ModuleList`` whose length equals the layer count);
encoder-only, encoder-decoder and multimodal models are refused with a named error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shortllm.errors import UnsupportedArchitectureError
from shortllm.wording import plural


@dataclass(frozen=True)
class PositionRule:
    """Kind (c): config fields that state a per-block property through block positions.

    Attributes:
        fields: the config fields read together, e.g. ``("attn_layer_period", "attn_layer_offset")``.
        kind: a key of :data:`POSITION_KINDS` saying how the fields map to blocks.
        means: what the pattern selects, for messages (e.g. ``"MoE blocks"``).
        runtime: True when the modeling code reads the fields when it builds or runs the blocks; False
            when they only seed a per-block list the config also stores (the list is what the model
            reads), so that after a cut no period fits they may be set to None where the config allows.
        into: an index field (kind (b)) listing blocks where the property is off; a period that cannot
            be kept becomes 1 (every block) with the blocks it left out added there (qwen2_moe).
        aliases: other config attributes holding the same value (Gemma 3's ``_sliding_window_pattern``).
        context: config fields the pattern also reads but surgery leaves alone (``use_sliding_window``).
    """

    fields: tuple[str, ...]
    kind: str
    means: str
    runtime: bool = True
    into: str | None = None
    aliases: tuple[str, ...] = ()
    context: tuple[str, ...] = ()


def _rule(fields: str | tuple[str, ...], kind: str, means: str, **kw: Any) -> PositionRule:
    return PositionRule((fields,) if isinstance(fields, str) else fields, kind, means, **kw)


def _is_int(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


# Each kind: (field values then context values, number of blocks) -> one entry per block, or None for
# values the kind cannot read.
def _below(v: tuple, n: int) -> list | None:
    """Blocks i < t (first_k_dense_replace, num_dense_layers, max_window_layers)."""
    return [i < v[0] for i in range(n)] if _is_int(v[0]) else None


def _even_below(v: tuple, n: int) -> list | None:
    """qwen2_moe's sliding blocks: even blocks below t, when the context flag (use_sliding_window) is on."""
    return [bool(v[1]) and i % 2 == 0 and i < v[0] for i in range(n)] if _is_int(v[0]) else None


def _range(v: tuple, n: int) -> list | None:
    """Blocks first <= i <= last, last == -1 meaning the last block (ernie4_5_moe)."""
    if not _is_int(*v):
        return None
    last = n - 1 if v[1] == -1 else v[1]
    return [v[0] <= i <= last for i in range(n)]


def _every_nth(v: tuple, n: int) -> list | None:
    """Every p-th block, (i + 1) % p == 0; none for p == 0 (decoder_sparse_step, sliding_window_pattern)."""
    return [v[0] > 0 and (i + 1) % v[0] == 0 for i in range(n)] if _is_int(v[0]) and v[0] >= 0 else None


def _every_nth_from_first(v: tuple, n: int) -> list | None:
    """Blocks 0, p, 2p, ...: i % p == 0 (moe_layer_freq, modernbert-decoder global_attn_every_n_layers)."""
    return [i % v[0] == 0 for i in range(n)] if _is_int(v[0]) and v[0] > 0 else None


def _period_offset(v: tuple, n: int) -> list | None:
    """Blocks i % period == offset (jamba attn_layer_period/offset, expert_layer_period/offset)."""
    return [i % v[0] == v[1] for i in range(n)] if _is_int(*v) and v[0] > 0 else None


def _cycle(v: tuple, n: int) -> list | None:
    """A pattern (string or list) repeated over the blocks (recurrent_gemma block_types)."""
    if isinstance(v[0], (str, list, tuple)) and len(v[0]) > 0:
        return [v[0][i % len(v[0])] for i in range(n)]
    return None


def _every_nth_or_cycle(v: tuple, n: int) -> list | None:
    """An int is every_nth, a string or list a cycle (exaone4 sliding_window_pattern: 4 or "LLLG")."""
    return _every_nth(v, n) if _is_int(v[0]) else _cycle(v, n)


def _repeat_groups(v: tuple, n: int) -> list | None:
    """GPT-Neo ``attention_types``: ``[[["global", "local"], 12]]`` -> the groups repeated, in order."""
    try:
        out = [kind for group, times in v[0] for _ in range(int(times)) for kind in group]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


POSITION_KINDS = {
    "below": _below, "even_below": _even_below, "range": _range, "every_nth": _every_nth,
    "every_nth_from_first": _every_nth_from_first, "period_offset": _period_offset, "cycle": _cycle,
    "every_nth_or_cycle": _every_nth_or_cycle, "repeat_groups": _repeat_groups,
}


def position_pattern(rule: PositionRule, values: tuple[Any, ...], num_blocks: int) -> list[Any] | None:
    """The per-block pattern the values of ``rule.fields`` (then ``rule.context``) state for ``num_blocks``.

    Returns:
        One entry per block (True where the block is selected, or the block's label for cycles), or None
        when the values are not of a form the kind reads (e.g. a period of 0).
    """
    return POSITION_KINDS[rule.kind](values, num_blocks)


@dataclass(frozen=True)
class ArchSpec:
    """How one decoder family is laid out.

    Attributes:
        blocks_path: dotted attribute path from the ``*ForCausalLM`` module to the ModuleList of blocks.
        layer_count_key: config attribute holding the number of blocks (after ``attribute_map``).
        per_layer_keys: (a) config fields with one entry per block, filtered on surgery. Any other list
            whose length equals the layer count is filtered too (see ``surgery.rewrite_config``).
        index_keys: (b) config fields listing block indices, renumbered on surgery.
        position_rules: (c) thresholds, ranges and periods over block positions.
        fixed_first_block: block 0 is built differently from the others (a module it lacks), so no
            other block can become block 0.
        embedding_scale: how the embeddings are scaled before block 0 (informational; the scoring code
            captures block inputs with hooks, so the scale is always applied exactly as the model does).
    """

    blocks_path: str
    layer_count_key: str = "num_hidden_layers"
    per_layer_keys: tuple[str, ...] = ()
    index_keys: tuple[str, ...] = ()
    position_rules: tuple[PositionRule, ...] = ()
    fixed_first_block: bool = False
    embedding_scale: str | None = None


_LT = ("layer_types",)
_LLAMA_LIKE = ArchSpec("model.layers")
_WITH_LAYER_TYPES = ArchSpec("model.layers", per_layer_keys=_LT)
_SQRT = "sqrt(hidden_size)"
# Qwen2/3 seed layer_types from it: blocks before max_window_layers use full attention, the rest slide;
# a threshold, so any cut renumbers it exactly. qwen2_moe slides the even blocks below it instead.
_MAX_WINDOW = _rule("max_window_layers", "below", "full-attention blocks", runtime=False)
_MOE_MAX_WINDOW = _rule("max_window_layers", "even_below", "sliding-window blocks", runtime=False,
                        context=("use_sliding_window",))
# qwen2_moe/qwen3_moe/qwen3_next: block i is MoE iff (i + 1) % decoder_sparse_step == 0 and i is not in
# mlp_only_layers; a step the cut breaks becomes 1 with the left-out blocks listed in mlp_only_layers.
_SPARSE_STEP = _rule("decoder_sparse_step", "every_nth", "MoE blocks", into="mlp_only_layers")
# DeepSeek-style MoE: dense blocks first, then MoE on blocks i % moe_layer_freq == 0 (the frequency is a
# hub config field that transformers does not declare but vLLM and the original code read).
_DEEPSEEK = ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(
    _rule("first_k_dense_replace", "below", "dense (non-MoE) blocks"),
    _rule("moe_layer_freq", "every_nth_from_first", "MoE blocks"),
))
_WINDOW_PATTERN = _rule("sliding_window_pattern", "every_nth", "full-attention blocks", runtime=False)

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _WITH_LAYER_TYPES,
    "mistral": _WITH_LAYER_TYPES,
    "mixtral": _WITH_LAYER_TYPES,
    "qwen2": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(_MAX_WINDOW,)),
    "qwen2_moe": ArchSpec("model.layers", per_layer_keys=_LT, index_keys=("mlp_only_layers",),
                          position_rules=(_MOE_MAX_WINDOW, _SPARSE_STEP)),
    "qwen3": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(_MAX_WINDOW,)),
    "qwen3_moe": ArchSpec("model.layers", per_layer_keys=_LT, index_keys=("mlp_only_layers",),
                          position_rules=(_MAX_WINDOW, _SPARSE_STEP)),
    "qwen3_next": ArchSpec("model.layers", per_layer_keys=_LT, index_keys=("mlp_only_layers",),
                           position_rules=(_SPARSE_STEP, _rule("full_attention_interval", "every_nth",
                                                               "full-attention blocks", runtime=False))),
    "olmoe": _LLAMA_LIKE,
    "granitemoe": _LLAMA_LIKE,
    "minimax": _WITH_LAYER_TYPES,
    "gpt_oss": _WITH_LAYER_TYPES,
    # num_experts / moe_topk may be one value per block
    "hunyuan_v1_moe": ArchSpec("model.layers", per_layer_keys=("num_experts", "moe_topk")),
    "deepseek_v2": _DEEPSEEK,
    "deepseek_v3": _DEEPSEEK,
    "glm4_moe": _DEEPSEEK,
    "dots1": ArchSpec("model.layers", per_layer_keys=_LT,
                      position_rules=(*_DEEPSEEK.position_rules, _MAX_WINDOW)),
    # MoE on blocks (i + 1) % moe_layer_interval == 0 between moe_layer_start_index and moe_layer_end_index
    "ernie4_5_moe": ArchSpec("model.layers", position_rules=(
        _rule(("moe_layer_start_index", "moe_layer_end_index"), "range", "MoE blocks"),
        _rule("moe_layer_interval", "every_nth", "MoE blocks"),
    )),
    "llama4_text": ArchSpec("model.layers", per_layer_keys=("layer_types", "no_rope_layers"),
                            index_keys=("moe_layers",), position_rules=(
        _rule("interleave_moe_layer_step", "every_nth", "MoE blocks", runtime=False),
        _rule("no_rope_layer_interval", "every_nth", "blocks without RoPE", runtime=False),
    )),
    "afmoe": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(
        _rule("num_dense_layers", "below", "dense (non-MoE) blocks"),
        _rule("global_attn_every_n_layers", "every_nth", "full-attention blocks", runtime=False),
    )),
    "lfm2": ArchSpec("model.layers", per_layer_keys=_LT, index_keys=("full_attn_idxs",)),
    "lfm2_moe": ArchSpec("model.layers", per_layer_keys=_LT, index_keys=("full_attn_idxs",),
                         position_rules=(_rule("num_dense_layers", "below", "dense (non-MoE) blocks"),)),
    "jamba": ArchSpec("model.layers", position_rules=(
        _rule(("attn_layer_period", "attn_layer_offset"), "period_offset", "attention blocks"),
        _rule(("expert_layer_period", "expert_layer_offset"), "period_offset", "MoE blocks"),
    )),
    "bamba": ArchSpec("model.layers", index_keys=("attn_layer_indices",)),
    "recurrent_gemma": ArchSpec("model.layers", position_rules=(
        _rule("block_types", "cycle", "recurrent and attention blocks"),
    ), embedding_scale=_SQRT),
    "gemma": ArchSpec("model.layers", per_layer_keys=_LT, embedding_scale=_SQRT),
    "gemma2": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(_WINDOW_PATTERN,),
                       embedding_scale=_SQRT),
    "gemma3_text": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(
        _rule("sliding_window_pattern", "every_nth", "full-attention blocks", runtime=False,
              aliases=("_sliding_window_pattern",)),
    ), embedding_scale=_SQRT),
    "cohere2": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(_WINDOW_PATTERN,)),
    "exaone4": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(
        _rule("sliding_window_pattern", "every_nth_or_cycle", "full-attention blocks", runtime=False),
    )),
    "modernbert-decoder": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(
        _rule("global_attn_every_n_layers", "every_nth_from_first", "full-attention blocks", runtime=False),
    ), fixed_first_block=True),  # block 0 has no attention norm
    "phi3": _WITH_LAYER_TYPES,
    "phi": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
    "olmo2": _WITH_LAYER_TYPES,
    "olmo3": _WITH_LAYER_TYPES,
    "granite": ArchSpec("model.layers", per_layer_keys=_LT, embedding_scale="embedding_multiplier"),
    "cohere": _LLAMA_LIKE,
    "stablelm": _LLAMA_LIKE,
    "starcoder2": _LLAMA_LIKE,
    # hub configs also carry Qwen2's max_window_layers (inert: use_sliding_window is off)
    "smollm3": ArchSpec("model.layers", per_layer_keys=("layer_types", "no_rope_layers"), position_rules=(
        _rule("no_rope_layer_interval", "every_nth", "blocks without RoPE", runtime=False), _MAX_WINDOW,
    )),
    "gpt2": ArchSpec("transformer.h", layer_count_key="n_layer"),
    "gptj": ArchSpec("transformer.h", layer_count_key="n_layer"),
    "gpt_neo": ArchSpec("transformer.h", layer_count_key="num_layers", per_layer_keys=("attention_layers",),
                        position_rules=(_rule("attention_types", "repeat_groups", "attention kinds",
                                              runtime=False),)),
    "bloom": ArchSpec("transformer.h", layer_count_key="n_layer"),
    "falcon": ArchSpec("transformer.h"),
    "gpt_neox": ArchSpec("gpt_neox.layers"),
    "opt": ArchSpec("model.decoder.layers"),
}

# Config fields that name blocks by position in some family transformers ships (surveyed in the
# configuration_*.py files of transformers 5.x). A family whose spec does not declare one of these
# cannot be pruned while the field is set: surgery could not tell how to rewrite it.
POSITION_FIELD_NAMES = frozenset(
    {name for spec in ARCHITECTURES.values() for name in spec.index_keys}
    | {name for spec in ARCHITECTURES.values() for rule in spec.position_rules for name in rule.fields}
    | {
        "attention_types", "attn_layer_indices", "attn_layer_offset", "attn_layer_period", "block_types",
        "cross_attention_layers", "decoder_sparse_step", "expert_layer_offset", "expert_layer_period",
        "first_k_dense_replace", "first_shared_layer", "full_attn_idxs", "full_attention_interval",
        "global_attn_every_n_layers",
        "hybrid_layer_ids", "hybrid_override_pattern", "interleave_moe_layer_step", "interval_pattern",
        "kv_source_layers", "layer_group_size", "local_layer_ids", "max_window_layers", "mlp_only_layers",
        "moe_layer_end_index", "moe_layer_freq", "moe_layer_interval", "moe_layer_start_index",
        "moe_layers", "no_rope_layer_interval", "num_dense_layers", "num_kv_shared_layers",
        "sliding_window_pattern", "window_pattern",
    }
)

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


def spec_of(config: Any) -> ArchSpec:
    """The table's spec for ``config``'s model type, or a generic one (layer count found by name,
    ``layer_types`` as the only known per-block list) for a type the table does not list.

    Raises:
        UnsupportedArchitectureError: for encoder or multimodal configs, or when no layer count is found.
    """
    spec = ARCHITECTURES.get(getattr(config, "model_type", ""))
    if spec is not None:
        return spec
    return ArchSpec("", layer_count_key=layer_count_key(config), per_layer_keys=_LT)


_EXAMPLES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3")

# Names of sub-configs of multimodal models that hold something other than the language model.
_TOWERS = (("vision", "vision tower"), ("audio", "audio encoder"), ("speech", "speech encoder"),
           ("image", "image encoder"), ("video", "video encoder"))


def _sub_configs(config: Any) -> dict[str, Any]:
    """Attributes of ``config`` that are configs themselves (``text_config``, ``vision_config``, ...)."""
    return {key: value for key, value in vars(config).items()
            if not key.startswith("_") and hasattr(value, "to_dict") and hasattr(value, "model_type")}


def _block_count(config: Any) -> int | None:
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_multimodal(config: Any) -> None:
    """Refuse a multimodal config (a language model nested beside a vision or audio tower).

    Pruning the language tower of such a model is not supported yet; the message names the nesting found.

    Raises:
        UnsupportedArchitectureError: naming where the language model's blocks are, what sits beside them,
            and what is supported.
    """
    subs = _sub_configs(config)
    if not subs:
        return
    get_text = getattr(config, "get_text_config", None)
    text = get_text() if callable(get_text) else None
    text_key = next((k for k, v in subs.items() if v is text), None)
    if text_key is None:
        text_key = next((k for k in subs if "text" in k or "language" in k or "llm" in k), None)
    others = [k for k in subs if k != text_key]
    if text_key is None or not others:
        return
    model_type = getattr(config, "model_type", "?")
    text_config = subs[text_key]
    count = _block_count(text_config)
    blocks = plural(count, "block") if count is not None else "blocks"
    def described(key: str) -> str:
        what = next((what for word, what in _TOWERS if word in key), "sub-model")
        return f"{'an' if key[0] in 'aeiou' else 'a'} {key} ({what})"

    towers = " and ".join(described(k) for k in others)
    text_type = getattr(text_config, "model_type", "")
    suggestion = (f"for '{model_type}' use a '{text_type}' (text-only) checkpoint of its language model"
                  if text_type in ARCHITECTURES else "use a text-only checkpoint of its language model")
    raise UnsupportedArchitectureError(
        f"model type '{model_type}' is a multimodal model: its language model's {blocks} are under "
        f"{text_key} (language model, type '{text_type}') beside {towers}; pruning multimodal models is "
        "not supported yet",
        f"{suggestion}; shortllm prunes text-only decoder models (types: {', '.join(supported_types())})",
    )


def check_decoder(config: Any) -> None:
    """Refuse configs of encoder-only, encoder-decoder and multimodal models.

    Raises:
        UnsupportedArchitectureError: naming the model type (and for multimodal models the nesting
            found) and what shortllm supports.
    """
    check_multimodal(config)
    model_type = getattr(config, "model_type", "?")
    if model_type in ENCODER_ONLY or getattr(config, "is_encoder_decoder", False):
        kind = "an encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "an encoder-only"
        raise UnsupportedArchitectureError(
            f"'{model_type}' is {kind} model; shortllm prunes decoder-only causal language models",
            f"use a decoder model such as {', '.join(_EXAMPLES)}, ...",
        )


def layer_count_key(config: Any) -> str:
    """The config attribute that holds the number of blocks for this config's family.

    Raises:
        UnsupportedArchitectureError: for multimodal configs, or when no layer count is found.
    """
    spec = ARCHITECTURES.get(getattr(config, "model_type", ""))
    if spec is not None:
        return spec.layer_count_key
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(getattr(config, key, None), int):
            return key
    check_multimodal(config)
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
