"""Tiny, randomly initialised decoder models for the test suite.

Nothing here touches the Hugging Face hub: every model is built from a config with
``AutoModelForCausalLM.from_config`` and then re-randomised, so that every block really
changes its input (stock inits leave some archs with identity-like blocks, e.g. Gemma's
zero-centred norms or zero biases) and the logits vary from token to token.
"""

from __future__ import annotations

import math

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

ARCHS: list[str] = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "olmo2",
    "granite",
    "gpt2",
    "gpt_neox",
    "opt",
]

# Families whose configs tie fields to block positions (MoE layouts, hybrid attention, layer patterns),
# each built with those fields set so that they matter on 4 blocks; tested by
# tests/models/test_position_fields.py (skip-forward, reload, config rewrite).
POSITION_ARCHS: list[str] = [
    "qwen2_moe", "qwen3_moe", "qwen3_next", "mixtral", "olmoe", "granitemoe", "minimax", "gpt_oss",
    "hunyuan_v1_moe", "deepseek_v2", "deepseek_v3", "glm4_moe", "dots1", "ernie4_5_moe", "llama4_text",
    "afmoe", "lfm2", "lfm2_moe", "jamba", "bamba", "recurrent_gemma", "cohere2", "exaone4", "olmo3",
    "modernbert-decoder", "smollm3", "gpt_neo",
]

# Further families with one MLP output projection per block (``models/arch.py: MLP_OUTPUTS``), for the checks
# of ``--replace linear``'s fold (tests/pruning/test_replace.py).
FOLD_ARCHS: list[str] = ["olmo", "cohere", "stablelm", "starcoder2", "phi", "gptj", "bloom", "falcon"]

# Families whose cache or masks differ per block (linear attention, SSM, sliding or chunked windows, NoPE):
# generating with the cache must still work after their per-block config was rewritten.
CACHE_ARCHS = ["qwen3_next", "minimax", "gpt_oss", "llama4_text", "afmoe", "lfm2", "lfm2_moe", "jamba",
               "bamba", "recurrent_gemma", "exaone4", "smollm3", "gpt_neo", "modernbert-decoder"]

HIDDEN, HEADS, KV_HEADS, INTERMEDIATE, VOCAB, MAX_POS = 64, 4, 2, 128, 128, 256
SLIDING_WINDOW = 8  # small enough to matter for sequences of 16+ tokens


def _alternating(num_layers: int) -> list[str]:
    """``["sliding_attention", "full_attention", ...]`` of length ``num_layers``."""
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)]


def _cycle(pattern: list, num_layers: int) -> list:
    """``pattern`` repeated to ``num_layers`` entries."""
    return [pattern[i % len(pattern)] for i in range(num_layers)]


def _arch_kwargs(arch: str, num_layers: int) -> dict:
    """Config keyword arguments for ``arch`` (its own key names, dropouts zeroed)."""
    llama_like = dict(
        hidden_size=HIDDEN, num_hidden_layers=num_layers, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, intermediate_size=INTERMEDIATE, head_dim=HIDDEN // HEADS,
        attention_dropout=0.0,
    )
    if arch in ("llama", "olmo2", "gemma", "phi3"):
        return llama_like | ({"resid_pdrop": 0.0, "embd_pdrop": 0.0} if arch == "phi3" else {})
    if arch == "mistral":  # one global window, applied to every layer
        return llama_like | dict(sliding_window=SLIDING_WINDOW)
    if arch in ("qwen2", "qwen3"):
        return llama_like | dict(
            use_sliding_window=True, sliding_window=SLIDING_WINDOW, max_window_layers=0,
            layer_types=_alternating(num_layers),
        )
    if arch in ("gemma2", "gemma3_text"):
        return llama_like | dict(
            sliding_window=SLIDING_WINDOW, layer_types=_alternating(num_layers),
            query_pre_attn_scalar=HIDDEN // HEADS,
        )
    if arch == "granite":  # non-trivial multipliers so the scaling quirks are exercised
        return llama_like | dict(
            embedding_multiplier=4.0, residual_multiplier=0.5, logits_scaling=2.0,
            attention_multiplier=1.0 / math.sqrt(HIDDEN // HEADS),
        )
    if arch == "gpt2":
        return dict(
            n_embd=HIDDEN, n_layer=num_layers, n_head=HEADS, n_inner=INTERMEDIATE, n_positions=MAX_POS,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
    if arch == "gpt_neox":
        return dict(
            hidden_size=HIDDEN, num_hidden_layers=num_layers, num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE, attention_dropout=0.0, hidden_dropout=0.0,
        )
    if arch == "opt":
        return dict(
            hidden_size=HIDDEN, word_embed_proj_dim=HIDDEN, num_hidden_layers=num_layers,
            num_attention_heads=HEADS, ffn_dim=INTERMEDIATE, dropout=0.0, attention_dropout=0.0,
            layerdrop=0.0,
        )
    if arch in POSITION_ARCHS:
        return _position_arch_kwargs(arch, num_layers, llama_like)
    if arch in FOLD_ARCHS:
        return _fold_arch_kwargs(arch, num_layers, llama_like)
    raise ValueError(f"unknown tiny arch {arch!r}; expected one of {ARCHS + POSITION_ARCHS + FOLD_ARCHS}")


def _fold_arch_kwargs(arch: str, num_layers: int, llama_like: dict) -> dict:
    """Config keyword arguments for the families of ``FOLD_ARCHS``."""
    if arch in ("olmo", "cohere"):
        return llama_like
    if arch == "stablelm":
        return llama_like | dict(hidden_dropout=0.0)
    if arch == "starcoder2":
        return llama_like | dict(residual_dropout=0.0, embedding_dropout=0.0)
    if arch == "phi":
        return llama_like | dict(resid_pdrop=0.0, embd_pdrop=0.0)
    if arch == "gptj":
        return dict(n_embd=HIDDEN, n_layer=num_layers, n_head=HEADS, n_inner=INTERMEDIATE, rotary_dim=8,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if arch == "bloom":
        return dict(hidden_size=HIDDEN, n_layer=num_layers, n_head=HEADS, hidden_dropout=0.0,
                    attention_dropout=0.0)
    # falcon: the 7B layout (parallel attention and MLP, one key/value head)
    return dict(hidden_size=HIDDEN, num_hidden_layers=num_layers, num_attention_heads=HEADS, hidden_dropout=0.0,
                attention_dropout=0.0)


def _position_arch_kwargs(arch: str, num_layers: int, llama_like: dict) -> dict:
    """Config keyword arguments for the families of ``POSITION_ARCHS`` (4 experts, 2 per token)."""
    moe = dict(moe_intermediate_size=32, num_experts_per_tok=2)
    mla = dict(  # DeepSeek-style latent attention: every head its own key/value head
        kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=8,
        num_key_value_heads=HEADS, n_routed_experts=4, n_shared_experts=1, n_group=1, topk_group=1,
    )
    no_head_dim = {k: v for k, v in llama_like.items() if k != "head_dim"}
    window = dict(sliding_window=SLIDING_WINDOW)
    kwargs = {
        # MoE on every block but block 1; blocks 0, 2 (i < max_window_layers and even) slide
        "qwen2_moe": llama_like | moe | dict(
            num_experts=4, shared_expert_intermediate_size=32, mlp_only_layers=[1], decoder_sparse_step=1,
            use_sliding_window=True, max_window_layers=2, **window),
        "qwen3_moe": llama_like | moe | dict(num_experts=4, mlp_only_layers=[1], decoder_sparse_step=1),
        "qwen3_next": llama_like | moe | dict(
            num_experts=4, shared_expert_intermediate_size=32, mlp_only_layers=[2], linear_key_head_dim=16,
            linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
            layer_types=_cycle(["linear_attention", "full_attention"], num_layers)),
        "mixtral": llama_like | dict(num_local_experts=4, num_experts_per_tok=2),
        "olmoe": llama_like | dict(num_experts=4, num_experts_per_tok=2),
        "granitemoe": llama_like | dict(num_local_experts=4, num_experts_per_tok=2),
        "minimax": llama_like | dict(num_local_experts=4, num_experts_per_tok=2),
        "gpt_oss": llama_like | dict(num_local_experts=4, num_experts_per_tok=2, **window),
        "hunyuan_v1_moe": llama_like | dict(num_experts=4, moe_topk=_cycle([2, 1], num_layers)),
        # dense blocks 0-1, MoE after; moe_layer_freq is a hub field transformers does not declare
        "deepseek_v2": no_head_dim | moe | mla | dict(first_k_dense_replace=2, moe_layer_freq=1),
        "deepseek_v3": no_head_dim | moe | mla | dict(first_k_dense_replace=2, moe_layer_freq=1),
        "glm4_moe": llama_like | moe | dict(n_routed_experts=4, n_shared_experts=1, first_k_dense_replace=2,
                                           n_group=1, topk_group=1),
        "dots1": llama_like | moe | dict(n_routed_experts=4, n_shared_experts=1, first_k_dense_replace=2,
                                        max_window_layers=2, **window),
        # MoE on blocks 1 and 3: (i + 1) % 2 == 0 from block 1 on
        "ernie4_5_moe": llama_like | dict(moe_intermediate_size=32, moe_k=2, moe_num_experts=4,
                                         moe_num_shared_experts=1, moe_layer_start_index=1,
                                         moe_layer_interval=2),
        "llama4_text": llama_like | dict(intermediate_size_mlp=INTERMEDIATE, num_local_experts=4,
                                        num_experts_per_tok=1, interleave_moe_layer_step=2,
                                        no_rope_layer_interval=2, attention_chunk_size=SLIDING_WINDOW),
        "afmoe": llama_like | moe | dict(num_experts=4, num_shared_experts=1, num_dense_layers=1,
                                        global_attn_every_n_layers=2, **window),
        "lfm2": llama_like | dict(full_attn_idxs=[1, 3]),
        "lfm2_moe": no_head_dim | moe | dict(num_experts=4, num_dense_layers=2,
                                            layer_types=_cycle(["conv", "full_attention"], num_layers)),
        # attention on blocks 1 and 3, MoE on blocks 1 and 3
        "jamba": no_head_dim | dict(num_key_value_heads=HEADS, num_experts=4, num_experts_per_tok=2,
                                    expert_layer_period=2, expert_layer_offset=1, attn_layer_period=2,
                                    attn_layer_offset=1, mamba_d_state=8, mamba_dt_rank=8),
        "bamba": no_head_dim | dict(num_key_value_heads=HEADS, attn_layer_indices=[1, 3], mamba_n_heads=4,
                                    mamba_d_head=32, mamba_d_state=8, mamba_chunk_size=8),
        "recurrent_gemma": dict(hidden_size=HIDDEN, num_hidden_layers=num_layers, num_attention_heads=HEADS,
                                num_key_value_heads=1, intermediate_size=INTERMEDIATE, lru_width=HIDDEN,
                                attention_window_size=SLIDING_WINDOW, block_types=["recurrent", "attention"]),
        "cohere2": llama_like | dict(sliding_window_pattern=2, **window),
        "exaone4": llama_like | dict(sliding_window_pattern=2, **window),
        "olmo3": llama_like | window,
        # full attention on blocks 0 and 2 (global_attn_every_n_layers is read from the kwargs)
        "modernbert-decoder": llama_like | dict(global_attn_every_n_layers=2, local_attention=SLIDING_WINDOW),
        "smollm3": llama_like | dict(no_rope_layer_interval=2),
        "gpt_neo": dict(hidden_size=HIDDEN, num_layers=num_layers, num_heads=HEADS,
                        intermediate_size=INTERMEDIATE, window_size=SLIDING_WINDOW,
                        attention_types=[[["global", "local"], num_layers // 2]]
                        + [[["global"], 1]] * (num_layers % 2),
                        attention_dropout=0.0, resid_dropout=0.0, embed_dropout=0.0),
    }
    return kwargs[arch]


def tiny_config(arch: str, num_layers: int = 4, **overrides) -> PretrainedConfig:
    """Config of a tiny ``arch`` decoder: hidden 64, 4 heads, MLP 128, vocab 128, 256 positions.

    Gemma2/Gemma3 and Qwen2/Qwen3 alternate sliding (window 8) and full attention layers;
    Mistral uses a window of 8 everywhere. Attention is eager and all dropouts are zero.
    ``overrides`` replace config keyword arguments (e.g. ``decoder_sparse_step=2``).
    """
    kwargs = _arch_kwargs(arch, num_layers) | overrides
    if arch != "gpt2":  # gpt2 spells it n_positions
        kwargs["max_position_embeddings"] = MAX_POS
    cfg = AutoConfig.for_model(
        arch, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0, **kwargs
    )
    cfg._attn_implementation = "eager"
    return cfg


@torch.no_grad()
def _rerandomize(model: torch.nn.Module, hidden: int, generator: torch.Generator) -> None:
    """Replace every parameter with seeded noise that keeps the forward well conditioned.

    Matrices (incl. embeddings) get N(0, 1/hidden): each block then adds an O(1) update to
    the residual stream. 1-D params (norm weights, biases) are perturbed around their stock
    init value with N(0, 0.1), so norms stay ~1 (or ~0 for Gemma's ``1 + w`` norms).
    Tied weights are shared tensors and are visited once by ``named_parameters``.
    """
    for _, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        if p.ndim >= 2:
            p.copy_(noise / math.sqrt(hidden))
        else:
            centre = 1.0 if torch.allclose(p, torch.ones_like(p)) else 0.0
            p.copy_(centre + 0.1 * noise)


def tiny_model(arch: str, num_layers: int = 4, seed: int = 0, **overrides) -> torch.nn.Module:
    """Float32 eval-mode ``AutoModelForCausalLM`` for ``arch`` with seeded random weights."""
    cfg = tiny_config(arch, num_layers, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    _rerandomize(model, HIDDEN, torch.Generator().manual_seed(seed))
    return model.float().eval()


def tiny_inputs(config: PretrainedConfig, batch: int = 2, seq: int = 16, seed: int = 0) -> torch.LongTensor:
    """Seeded random token ids of shape ``(batch, seq)`` within ``config.vocab_size``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, seq), generator=generator, dtype=torch.long)


# Multimodal checkpoints (a language model under ``text_config`` beside a vision tower), built whole with
# ``AutoModelForImageTextToText``: tests/models/test_multimodal.py prunes their language blocks.
MULTIMODAL_ARCHS: list[str] = [
    "gemma3", "mistral3", "llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "llama4",
]

_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=28,
               patch_size=14)


def _multimodal_kwargs(arch: str, num_layers: int) -> dict:
    """``text_config`` and ``vision_config`` keyword arguments of a tiny ``arch`` (2 vision blocks)."""
    text = {k: v for k, v in _arch_kwargs("llama", num_layers).items()} | dict(
        vocab_size=VOCAB, max_position_embeddings=MAX_POS, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    mrope = {"rope_type": "default", "mrope_section": [2, 3, 3]}  # 2 * (2 + 3 + 3) = head_dim 16
    qwen_vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                       patch_size=14)
    if arch == "gemma3":  # sliding and full attention alternate, as in tiny gemma3_text
        return dict(text_config=text | _arch_kwargs("gemma3_text", num_layers) | dict(model_type="gemma3_text"),
                    vision_config=_VISION | dict(model_type="siglip_vision_model"), mm_tokens_per_image=4)
    if arch == "mistral3":
        return dict(text_config=text | _arch_kwargs("mistral", num_layers) | dict(model_type="mistral"),
                    vision_config=_VISION | dict(model_type="pixtral", head_dim=16))
    if arch in ("llava", "llava_next"):
        return dict(text_config=text | dict(model_type="llama"),
                    vision_config=_VISION | dict(model_type="clip_vision_model"))
    if arch in ("qwen2_vl", "qwen2_5_vl"):  # blocks 0-1 full attention, 2-3 sliding (max_window_layers=2)
        vision = (dict(depth=2, embed_dim=32, hidden_size=HIDDEN, mlp_ratio=2, num_heads=2, patch_size=14)
                  if arch == "qwen2_vl" else qwen_vision | dict(window_size=28, fullatt_block_indexes=[1]))
        return dict(text_config=text | dict(rope_scaling=mrope, use_sliding_window=True,
                                            sliding_window=SLIDING_WINDOW, max_window_layers=2),
                    vision_config=vision)
    if arch in ("qwen3_vl", "qwen3_vl_moe"):
        moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1,
                   mlp_only_layers=[1]) if arch == "qwen3_vl_moe" else {}
        return dict(text_config=text | moe | dict(rope_scaling=mrope | {"mrope_interleaved": True}),
                    vision_config=qwen_vision | dict(deepstack_visual_indexes=[0, 1], num_position_embeddings=16))
    if arch == "llama4":  # MoE on blocks 1 and 3, no RoPE on blocks 1 and 3, chunked attention elsewhere
        return dict(text_config=text | _arch_kwargs("llama4_text", num_layers),
                    vision_config=_VISION | dict(vision_output_dim=HIDDEN, projector_input_dim=HIDDEN,
                                                 projector_output_dim=HIDDEN))
    raise ValueError(f"unknown tiny multimodal arch {arch!r}; expected one of {MULTIMODAL_ARCHS}")


def tiny_multimodal_config(arch: str, num_layers: int = 4) -> PretrainedConfig:
    """Config of a tiny multimodal ``arch``: the language model as in :func:`tiny_config` (hidden 64, vocab 128,
    ``num_layers`` blocks) beside a 2-block, 32-wide vision tower. Attention is eager."""
    cfg = AutoConfig.for_model(arch, **_multimodal_kwargs(arch, num_layers))
    for sub in (cfg, cfg.get_text_config()):
        sub._attn_implementation = "eager"
    return cfg


def tiny_multimodal_model(arch: str, num_layers: int = 4, seed: int = 0) -> torch.nn.Module:
    """Float32 eval-mode ``AutoModelForImageTextToText`` (the checkpoint's own class) for ``arch``, seeded
    random weights (vision tower included)."""
    from transformers import AutoModelForImageTextToText

    cfg = tiny_multimodal_config(arch, num_layers)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(cfg, attn_implementation="eager")
    _rerandomize(model, HIDDEN, torch.Generator().manual_seed(seed))
    return model.float().eval()
