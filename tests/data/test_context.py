"""The one context check: the limit read the same way for every family, the message and a hint that fits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import BloomConfig, Gemma3Config, GPT2Config, LlamaConfig, MambaConfig, Qwen2Config

from shortllm.data.context import check_context, context_limit
from shortllm.errors import BenchSettingsError, DataError
from tests.tiny_models import ARCHS, tiny_config

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_tiny_family_says_256(arch):
    assert context_limit(tiny_config(arch)) == 256  # gpt2 spells it n_positions, the rest max_position_embeddings


@pytest.mark.parametrize("config, limit", [
    (GPT2Config(n_positions=1024), 1024),
    (SimpleNamespace(seq_length=8192), 8192),  # remote-code families (ChatGLM, Qwen-1)
    (SimpleNamespace(n_ctx=2048), 2048),
    (SimpleNamespace(max_sequence_length=4096), 4096),
    (SimpleNamespace(max_seq_len=2048), 2048),
    (SimpleNamespace(max_position_embeddings=None, seq_length=True), None),  # None and a bool are no limit
    (SimpleNamespace(max_position_embeddings=0, n_positions=512), 512),
    (BloomConfig(), None),  # ALiBi: no position table, no limit
    (MambaConfig(), None),  # no positions at all
    (Qwen2Config(max_position_embeddings=32768, rope_scaling=YARN), 131072),  # YaRN stretches the trained length
    (LlamaConfig(max_position_embeddings=131072, rope_scaling=LLAMA3), 131072),  # already the stretched length
    (Gemma3Config(text_config={"max_position_embeddings": 4096}), 4096),  # multimodal: the text config's
    (SimpleNamespace(text_config=SimpleNamespace(n_positions=300)), 300),
])
def test_context_limit(config, limit):
    assert context_limit(config) == limit


def test_within_the_limit_passes():
    config = tiny_config("llama")
    assert check_context(config, 256, "--seq-len 256", "--seq-len") == 256
    assert check_context(MambaConfig(), 10**9, "--seq-len 1000000000", "--seq-len") is None


def test_the_hint_suggests_the_real_maximum():
    config = LlamaConfig(max_position_embeddings=8192)
    with pytest.raises(DataError) as err:
        check_context(config, 10_000, "--seq-len 10000", "--seq-len", model="big")
    assert err.value.one_line() == ("--seq-len 10000 is longer than the context of big (8192 positions). "
                                    "Use --seq-len 8192 or less.")


def test_the_hint_leaves_room_for_the_rest_of_the_sequence():
    config = tiny_config("gpt2")
    with pytest.raises(BenchSettingsError) as err:
        check_context(config, 300, "--prompt-len 200 + --new-tokens 100 = 300 tokens", "--new-tokens", extra=200,
                      error=BenchSettingsError)
    assert err.value.message == ("--prompt-len 200 + --new-tokens 100 = 300 tokens is longer than the context of "
                                 "the model (256 positions)")
    assert err.value.hint == "use --new-tokens 56 or less"
    with pytest.raises(DataError) as err:
        check_context(config, 600, "600 tokens", "--new-tokens", extra=300)
    assert err.value.hint == "keep it within 256 tokens in all"
