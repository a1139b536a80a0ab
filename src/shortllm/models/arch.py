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

Multimodal checkpoints (Gemma 3, Mistral 3, LLaVA, Qwen-VL, Llama 4: a language model under ``text_config``
beside a vision tower) have rows too: where the language blocks sit in the loaded model, the sub-config whose
fields surgery rewrites (:func:`language_config`), the name the blocks are saved under
(:func:`block_key_prefixes`) and the auto class that loads the whole checkpoint (:func:`auto_class`).

The table itself is data, in :mod:`shortllm.models.arch_table`. Nothing else in shortllm walks
``model.model.layers`` directly: it asks :func:`blocks_of`. Unknown decoder families fall back to generic
detection (the one ``ModuleList`` whose length equals the layer count); encoder-only, encoder-decoder and
other multimodal models are refused with a named error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shortllm.errors import UnsupportedArchitectureError
from shortllm.models.arch_table import (  # noqa: F401 - the table is part of this module's API
    ARCHITECTURES,
    ENCODER_ONLY,
    POSITION_FIELD_NAMES,
    PROJECTIONS,
    ArchSpec,
    PositionRule,
)
from shortllm.wording import plural

_LT = ("layer_types",)


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


def multimodal_types() -> list[str]:
    """Multimodal model types whose language model shortllm prunes (rows with a ``text_config_key``), sorted."""
    return sorted(t for t, spec in ARCHITECTURES.items() if spec.text_config_key)


def spec_of(config: Any) -> ArchSpec:
    """The table's spec for ``config``'s model type, or a generic one (layer count found by name,
    ``layer_types`` as the only known per-block list) for a type the table does not list.

    For a multimodal checkpoint this is its own row (where the language blocks are, the auto class); the
    rules for its text config are ``spec_of(language_config(config))``.

    Raises:
        UnsupportedArchitectureError: for encoder or multimodal configs, or when no layer count is found.
    """
    spec = ARCHITECTURES.get(getattr(config, "model_type", ""))
    if spec is not None:
        return spec
    return ArchSpec("", layer_count_key=layer_count_key(config), per_layer_keys=_LT)


def language_config(config: Any) -> Any:
    """The config that holds the layer count and the per-block fields: the language model's sub-config
    (``config.text_config``) of a multimodal checkpoint in the table, else ``config`` itself."""
    spec = ARCHITECTURES.get(getattr(config, "model_type", ""))
    if spec is not None and spec.text_config_key:
        return getattr(config, spec.text_config_key)
    return config


def block_key_prefixes(config: Any) -> tuple[str, ...]:
    """Names a safetensors checkpoint of ``config``'s family may store the block list under (tensors
    ``{prefix}.{i}.…``), the one stock ``save_pretrained`` writes first (see ``ArchSpec.checkpoint_prefix``);
    empty for a family the table does not list."""
    spec = ARCHITECTURES.get(getattr(config, "model_type", ""))
    return spec.checkpoint_prefixes if spec is not None else ()


def auto_class(config: Any) -> Any:
    """The ``transformers`` auto class that builds and loads ``config``'s whole checkpoint as its own class:
    ``AutoModelForCausalLM``, or for the multimodal rows ``AutoModelForImageTextToText`` (vision tower
    included). Imports transformers."""
    import transformers

    spec = ARCHITECTURES.get(getattr(config, "model_type", ""))
    return getattr(transformers, spec.auto_class if spec is not None else "AutoModelForCausalLM")


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


def _check_language_config(config: Any, spec: ArchSpec) -> None:
    """A multimodal row's config must carry its language sub-config with a layer count."""
    model_type = getattr(config, "model_type", "?")
    text = getattr(config, spec.text_config_key or "", None)
    if text is None or not hasattr(text, "to_dict") or _block_count(text) is None:
        raise UnsupportedArchitectureError(
            f"the config of multimodal model type '{model_type}' has no {spec.text_config_key} with a layer "
            "count, so its language model's blocks cannot be found",
            f"check config.json: it should hold a {spec.text_config_key} with num_hidden_layers",
        )


def check_multimodal(config: Any) -> None:
    """Refuse a multimodal config (a language model nested beside a vision or audio tower) unless the table
    says how to prune its language model (:func:`multimodal_types`: Gemma 3, Mistral 3, LLaVA, Qwen-VL,
    Llama 4).

    Raises:
        UnsupportedArchitectureError: for a multimodal type not in the table, naming where its language
            model's blocks are, what sits beside them, and what is supported; for a table type whose config
            lacks its language sub-config.
    """
    spec = ARCHITECTURES.get(getattr(config, "model_type", ""))
    if spec is not None and spec.text_config_key:
        _check_language_config(config, spec)
        return
    subs = _sub_configs(config)
    if not subs:
        return
    get_text = getattr(config, "get_text_config", None)
    text = get_text() if callable(get_text) else None
    text_key = next((k for k, v in subs.items() if v is text), None)
    if text_key is None:
        text_key = next((k for k in subs if "text" in k or "language" in k or "llm" in k
                         or "thinker" in k), None)
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
        f"{text_key} (language model, type '{text_type}') beside {towers}; shortllm does not know this "
        "layout",
        f"{suggestion}; shortllm prunes text-only decoder models and the language model of the multimodal "
        f"types {', '.join(multimodal_types())}",
    )


def check_decoder(config: Any) -> None:
    """Refuse configs of encoder-only, encoder-decoder and multimodal models not in the table.

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
    """The config attribute that holds the number of blocks for this config's family; for a multimodal
    checkpoint, the attribute of its :func:`language_config`.

    Raises:
        UnsupportedArchitectureError: for multimodal configs not in the table, or when no layer count is found.
    """
    spec = ARCHITECTURES.get(getattr(config, "model_type", ""))
    if spec is not None and spec.text_config_key:
        check_multimodal(config)
        return layer_count_key(language_config(config))
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
    """Number of transformer blocks the config declares (the language model's, for a multimodal checkpoint)."""
    return int(getattr(language_config(config), layer_count_key(config)))


def _get_path(root: Any, path: str) -> tuple[Any, str, Any]:
    parent = root
    *head, last = path.split(".")
    for name in head:
        parent = getattr(parent, name)
    return parent, last, getattr(parent, last)


def blocks_of(model: Any) -> Blocks:
    """Locate the ModuleList of transformer blocks of ``model`` (the language model's, for a multimodal
    checkpoint: its vision tower's blocks are never returned).

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
            rules = spec_of(language_config(config)) if spec.text_config_key else spec
            return Blocks(parent, attr, layers, rules.layer_count_key, rules.per_layer_keys)
        if spec.text_config_key:
            raise UnsupportedArchitectureError(
                f"a '{model_type}' model of class {type(model).__name__} has no language blocks at "
                f"{spec.blocks_path}",
                f"load it as its checkpoint class ({spec.auto_class}), e.g. with shortllm's own loading",
            )

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


# Model families whose tokenizer's BOS must start every sequence: Gemma's model cards and Shortened LLaMA's
# released code (``add_bos_to_every``, "especially for gemma") both say so; without it perplexity is meaningless.
NEEDS_BOS = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "recurrent_gemma",
                       "paligemma", "shieldgemma2", "vaultgemma"})


def needs_bos(config: Any) -> bool:
    """Whether ``config``'s model family needs BOS at the start of every window (the Gemma family)."""
    types = {getattr(config, "model_type", "")}
    text = getattr(config, "text_config", None)
    if text is not None:
        types.add(getattr(text, "model_type", ""))
    return bool(types & NEEDS_BOS)


@dataclass(frozen=True)
class MlpOutput:
    """Where ``prune --replace linear`` (ReplaceMe) folds its map: the MLP's output projection of a block.

    The block must end ``h_out = a + scale * P`` with ``P`` the projection's output (bias included) and ``a``
    everything else (the residual after attention; parallel blocks add the attention output there too).

    Attributes:
        path: dotted path of the projection inside one block (an ``nn.Linear``, or GPT-2's ``Conv1D``).
        scale_key: config field multiplying ``P`` before the residual add (Granite's ``residual_multiplier``).
        off_when: ``(config field, value)`` for which the fold is impossible (OPT-350m's post-MLP norm).
    """

    path: str
    scale_key: str | None = None
    off_when: tuple[str, Any] | None = None


_DOWN = MlpOutput("mlp.down_proj")
# model_type -> where the linear replacement is folded. Families absent here are refused by name
# (see MLP_FOLD_REFUSED for the reasons of the known ones).
MLP_OUTPUTS: dict[str, MlpOutput] = {
    **{t: _DOWN for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo", "cohere", "cohere2",
                          "stablelm", "smollm3")},
    "granite": MlpOutput("mlp.down_proj", scale_key="residual_multiplier"),
    "phi": MlpOutput("mlp.fc2"),
    "starcoder2": MlpOutput("mlp.c_proj"),
    "gpt2": MlpOutput("mlp.c_proj"),
    "gptj": MlpOutput("mlp.fc_out"),
    "bloom": MlpOutput("mlp.dense_4h_to_h"),  # BloomMLP adds the residual itself: fold into the Linear
    "falcon": MlpOutput("mlp.dense_4h_to_h"),
    "gpt_neox": MlpOutput("mlp.dense_4h_to_h"),
    "opt": MlpOutput("fc2", off_when=("do_layer_norm_before", False)),
}
_POST_NORM = ("normalises the MLP output (post_feedforward_layernorm) before adding it to the residual, so no "
              "linear map folded into the MLP can carry it")
_MOE = "uses a mixture of experts: there is no single MLP output projection to fold a map into"
MLP_FOLD_REFUSED: dict[str, str] = {
    **{t: _POST_NORM for t in ("gemma2", "gemma3_text", "olmo2", "olmo3", "exaone4")},
    **{t: _MOE for t in ("mixtral", "qwen2_moe", "qwen3_moe", "qwen3_next", "olmoe", "granitemoe", "minimax",
                         "gpt_oss", "deepseek_v2", "deepseek_v3", "glm4_moe", "dots1", "ernie4_5_moe",
                         "llama4_text", "afmoe", "lfm2_moe", "hunyuan_v1_moe")},
}
