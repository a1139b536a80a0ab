"""The model's context: how many token positions a config allows, and the one check every verb makes with it.

Every verb that builds token windows (``score``/``prune`` calibration, ``eval`` perplexity, ``retrain`` blocks and
its teacher, ``bench`` prompt + generation) calls :func:`check_context` before any slow work, so a window longer
than the model allows fails with one line naming the limit and a value that fits, never with an ``IndexError``
from a position-embedding table deep in a forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shortllm.errors import DataError, ShortLLMError

# The keys families use for their longest sequence, in order of preference. Most transformers configs map theirs
# onto max_position_embeddings (gpt2's n_positions, mpt/dbrx's max_seq_len, rwkv's context_length); the others
# are spelled out for configs that do not (remote-code families: ChatGLM / Qwen-1 seq_length, ...).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length",
                "max_seq_len")
# RoPE scalings that stretch the positions a model was trained on by ``factor`` (the rest record the stretched
# length in max_position_embeddings themselves: llama3, longrope).
STRETCHING_ROPE = ("linear", "dynamic", "yarn")


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _configs(config: Any) -> Iterator[Any]:
    """The text config first (where multimodal configs keep the language model's limit), then the config itself."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else getattr(config, "text_config", None)
    if text is not None and text is not config:
        yield text
    yield config


def _rope_reach(config: Any, limit: int) -> int:
    """``limit`` stretched by a RoPE scaling that extends the trained length (YaRN, linear, dynamic NTK)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if not isinstance(params, dict):
        return limit
    # transformers 5 keeps one dict per attention kind for hybrid models ({"full_attention": {...}, ...})
    dicts = [params] if "rope_type" in params or "type" in params else [p for p in params.values() if isinstance(p, dict)]
    reach = limit
    for p in dicts:
        kind = p.get("rope_type", p.get("type"))
        factor = p.get("factor")
        if kind in STRETCHING_ROPE and isinstance(factor, (int, float)) and factor > 1:
            base = _positive_int(p.get("original_max_position_embeddings")) or limit
            reach = max(reach, int(base * factor))
    return reach


def context_limit(config: Any) -> int | None:
    """The longest token sequence a model config allows, or None when its family has no fixed limit.

    Reads the first of :data:`CONTEXT_KEYS` set to a positive integer, in the text config of a multimodal
    config first, then in the config itself; a RoPE scaling that stretches the trained length (``yarn``,
    ``linear``, ``dynamic`` with a ``factor``) extends it to ``factor x original_max_position_embeddings``.
    Families without such a key (ALiBi, state-space models) have no limit.

    Args:
        config: a ``transformers`` config (or any object with those attributes).

    Returns:
        The number of positions, or None.
    """
    for cfg in _configs(config):
        for key in CONTEXT_KEYS:
            limit = _positive_int(getattr(cfg, key, None))
            if limit is not None:
                return _rope_reach(cfg, limit)
    return None


def check_context(config: Any, tokens: int, what: str, option: str, *, model: str | None = None, extra: int = 0,
                  error: type[ShortLLMError] = DataError) -> int | None:
    """Refuse token sequences longer than the model's context (:func:`context_limit`).

    Args:
        config: the model's config.
        tokens: the longest sequence the verb will feed the model (a window with its BOS, or prompt + new tokens).
        what: how the user asked for that length, for the message (``"--seq-len 512"``,
            ``"--prompt-len 200 + --new-tokens 128 = 328 tokens"``).
        option: the option the hint tells the user to lower (``"--seq-len"``).
        model: the model's name for the message (default: "the model").
        extra: positions the sequence holds beside the option's value (the prompt, when the option is
            ``--new-tokens``): the hint suggests ``limit - extra``.
        error: the ShortLLMError subclass to raise.

    Returns:
        The limit, or None when the family has none (nothing is checked then).

    Raises:
        ``error``: ``tokens`` is beyond the limit; the hint names the largest value of ``option`` that fits.
    """
    limit = context_limit(config)
    if limit is None or tokens <= limit:
        return limit
    fit = limit - extra
    hint = f"use {option} {fit} or less" if fit >= 1 else f"keep it within {limit} tokens in all"
    raise error(f"{what} is longer than the context of {model or 'the model'} ({limit} positions)", hint)


def check_training_context(config: Any, model: str, seq_len: int, teacher: Any = None,
                           trust_remote_code: bool = False) -> None:
    """``retrain``'s check: every training block is ``--seq-len`` tokens, and a KD teacher reads the same blocks.

    Args:
        config: the student's config; ``model`` its name for the message.
        seq_len: ``--seq-len``.
        teacher: the teacher's resolved ``ModelSource`` (``--method kd``), or None.
        trust_remote_code: passed on when loading the teacher's config.

    Raises:
        DataError: ``seq_len`` beyond the student's or the teacher's context.
    """
    check_context(config, seq_len, f"--seq-len {seq_len}", "--seq-len", model=model)
    if teacher is not None:
        from shortllm.models.loading import load_config

        check_context(load_config(teacher, trust_remote_code), seq_len, f"--seq-len {seq_len}", "--seq-len",
                      model=f"the teacher {teacher.spec}")


__all__ = ["CONTEXT_KEYS", "check_context", "check_training_context", "context_limit"]
