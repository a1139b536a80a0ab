"""The architecture table: per Hugging Face ``model_type``, where the blocks live and which config fields
name blocks by position (data only; the functions that read it are in :mod:`shortllm.models.arch`).

To add a text-only family: one :class:`ArchSpec` line in :data:`ARCHITECTURES` (its block path and position
fields), plus its attention/MLP names in :data:`PROJECTIONS` for LoRA. To add a multimodal family (a
language model under ``text_config`` beside a vision tower): one :func:`_multimodal` line saying where its
language blocks are in the loaded model and under which name ``save_pretrained`` writes them; the rules
for the text config come from the row of the text config's own ``model_type``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PositionRule:
    """Kind (c): config fields that state a per-block property through block positions.

    Attributes:
        fields: the config fields read together, e.g. ``("attn_layer_period", "attn_layer_offset")``.
        kind: a key of ``arch.POSITION_KINDS`` saying how the fields map to blocks.
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


@dataclass(frozen=True)
class ArchSpec:
    """How one decoder family is laid out.

    Attributes:
        blocks_path: dotted attribute path from the loaded model (``*ForCausalLM``, or the multimodal
            checkpoint's own class) to the ModuleList of (language) blocks.
        layer_count_key: config attribute holding the number of blocks (after ``attribute_map``).
        per_layer_keys: (a) config fields with one entry per block, filtered on surgery. Any other list
            whose length equals the layer count is filtered too (see ``config_rewrite.rewrite_config``).
        index_keys: (b) config fields listing block indices, renumbered on surgery.
        position_rules: (c) thresholds, ranges and periods over block positions.
        fixed_first_block: block 0 is built differently from the others (a module it lacks), so no
            other block can become block 0.
        embedding_scale: how the embeddings are scaled before block 0 (informational; the scoring code
            captures block inputs with hooks, so the scale is always applied exactly as the model does).
        text_config_key: multimodal checkpoints only: the sub-config of the language model
            (``text_config``). Its layer count and per-block fields are rewritten on surgery, following the
            row of the sub-config's own ``model_type`` (e.g. ``gemma3_text``); every other sub-config (the
            vision tower's) is left as it is. None for text-only families.
        checkpoint_prefix: the name ``save_pretrained`` gives the block list in the saved state dict, tensors
            being ``{checkpoint_prefix}.{i}.…``; empty when it is ``blocks_path``. transformers 5 saves some
            multimodal models under their older layout (Gemma 3: module path
            ``model.language_model.layers``, saved as ``language_model.model.layers``), which is also how
            their hub checkpoints name them; out-of-core surgery renames tensors under this prefix.
        auto_class: the ``transformers`` auto class that builds and loads the whole checkpoint as its own
            class (``AutoModelForImageTextToText`` gives ``Gemma3ForConditionalGeneration`` for ``gemma3``).
    """

    blocks_path: str
    layer_count_key: str = "num_hidden_layers"
    per_layer_keys: tuple[str, ...] = ()
    index_keys: tuple[str, ...] = ()
    position_rules: tuple[PositionRule, ...] = ()
    fixed_first_block: bool = False
    embedding_scale: str | None = None
    text_config_key: str | None = None
    checkpoint_prefix: str = ""
    auto_class: str = "AutoModelForCausalLM"

    @property
    def checkpoint_prefixes(self) -> tuple[str, ...]:
        """Names under which a checkpoint may store the blocks, the one ``save_pretrained`` writes first,
        then the module path (which other tools write for the multimodal families)."""
        return tuple(dict.fromkeys(p for p in (self.checkpoint_prefix or self.blocks_path, self.blocks_path) if p))


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
    # Language models of multimodal checkpoints (text configs only; the blocks are found through the
    # multimodal rows below). Qwen2-VL / Qwen2.5-VL carry Qwen2's max_window_layers.
    "qwen2_vl_text": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(_MAX_WINDOW,)),
    "qwen2_5_vl_text": ArchSpec("model.layers", per_layer_keys=_LT, position_rules=(_MAX_WINDOW,)),
    "qwen3_vl_text": _WITH_LAYER_TYPES,
    "qwen3_vl_moe_text": ArchSpec("model.layers", per_layer_keys=_LT, index_keys=("mlp_only_layers",),
                                  position_rules=(_SPARSE_STEP,)),
    "ministral": _WITH_LAYER_TYPES,
    "ministral3": _WITH_LAYER_TYPES,
}


def _multimodal(blocks_path: str, saved_as: str = "") -> ArchSpec:
    """A multimodal checkpoint whose language model is configured by ``text_config``: its blocks at
    ``blocks_path`` in the loaded model, saved as ``saved_as`` (see :class:`ArchSpec`)."""
    return ArchSpec(blocks_path, text_config_key="text_config", checkpoint_prefix=saved_as,
                    auto_class="AutoModelForImageTextToText")


# Multimodal checkpoints whose language blocks shortllm prunes, the vision tower untouched. Paths and saved
# names as transformers 5 builds and saves them (tests/models/test_multimodal.py checks both on tiny models).
_LANGUAGE_MODEL = _multimodal("model.language_model.layers", "language_model.model.layers")
MULTIMODAL: dict[str, ArchSpec] = {
    "gemma3": _LANGUAGE_MODEL,
    "mistral3": _LANGUAGE_MODEL,
    "llava": _LANGUAGE_MODEL,
    "llava_next": _LANGUAGE_MODEL,
    "qwen2_vl": _multimodal("model.language_model.layers", "model.layers"),
    "qwen2_5_vl": _multimodal("model.language_model.layers", "model.layers"),
    "qwen3_vl": _multimodal("model.language_model.layers"),
    "qwen3_vl_moe": _multimodal("model.language_model.layers"),
    "llama4": _multimodal("language_model.model.layers"),
}
ARCHITECTURES.update(MULTIMODAL)

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

