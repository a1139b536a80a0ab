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

HIDDEN, HEADS, KV_HEADS, INTERMEDIATE, VOCAB, MAX_POS = 64, 4, 2, 128, 128, 256
SLIDING_WINDOW = 8  # small enough to matter for sequences of 16+ tokens


def _alternating(num_layers: int) -> list[str]:
    """``["sliding_attention", "full_attention", ...]`` of length ``num_layers``."""
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)]


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
    raise ValueError(f"unknown tiny arch {arch!r}; expected one of {ARCHS}")


def tiny_config(arch: str, num_layers: int = 4) -> PretrainedConfig:
    """Config of a tiny ``arch`` decoder: hidden 64, 4 heads, MLP 128, vocab 128, 256 positions.

    Gemma2/Gemma3 and Qwen2/Qwen3 alternate sliding (window 8) and full attention layers;
    Mistral uses a window of 8 everywhere. Attention is eager and all dropouts are zero.
    """
    kwargs = _arch_kwargs(arch, num_layers)
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


def tiny_model(arch: str, num_layers: int = 4, seed: int = 0) -> torch.nn.Module:
    """Float32 eval-mode ``AutoModelForCausalLM`` for ``arch`` with seeded random weights."""
    cfg = tiny_config(arch, num_layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    _rerandomize(model, HIDDEN, torch.Generator().manual_seed(seed))
    return model.float().eval()


def tiny_inputs(config: PretrainedConfig, batch: int = 2, seq: int = 16, seed: int = 0) -> torch.LongTensor:
    """Seeded random token ids of shape ``(batch, seq)`` within ``config.vocab_size``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, seq), generator=generator, dtype=torch.long)
