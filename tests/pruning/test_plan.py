"""Ratio arithmetic (DESIGN.md "Ratio semantics") and block-list parsing."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from shortllm.errors import BlockSelectionError
from shortllm.models.params import count_params
from shortllm.pruning.plan import (blocks_within_ratio, parse_blocks, plan_from_blocks, ratio_row,
                                   smallest_ratio_for_one)


def meta_llama(layers, hidden, inter, vocab=32000, tied=False):
    cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=inter, vocab_size=vocab,
                      num_attention_heads=hidden // 128, tie_word_embeddings=tied)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


@pytest.fixture(scope="module")
def llama7b():
    return count_params(meta_llama(32, 4096, 11008))


def test_llama7b_counts(llama7b):
    assert len(llama7b.per_block) == 32
    assert llama7b.per_block[0] == 202_383_360
    assert llama7b.total == 6_738_415_616


@pytest.mark.parametrize("ratio,blocks", [(0.2, 6), (0.45, 14), (0.6, 19), (0.8, 26)])
def test_llama7b_ratios(llama7b, ratio, blocks):
    assert blocks_within_ratio(llama7b, ratio) == blocks
    row = ratio_row(llama7b, ratio)
    assert row.params_removed <= ratio * llama7b.total  # never more than asked
    assert row.params_removed + llama7b.per_block[0] > ratio * llama7b.total  # and the largest such


def test_vicuna13b_ratio():
    counts = count_params(meta_llama(40, 5120, 13824))
    assert blocks_within_ratio(counts, 0.21) == 8


def test_released_names_reproduced_by_num_blocks(llama7b):
    # The released 3.7B / 2.7B removed 15 and 20 blocks: 45.05% and 60.07% of the parameters.
    assert plan_from_blocks(llama7b, list(range(15))).achieved_ratio == pytest.approx(0.4505, abs=1e-4)
    assert plan_from_blocks(llama7b, list(range(20))).achieved_ratio == pytest.approx(0.6007, abs=1e-4)


def test_smallest_ratio_removes_one(llama7b):
    r = smallest_ratio_for_one(llama7b)
    assert blocks_within_ratio(llama7b, r) == 1
    assert blocks_within_ratio(llama7b, r - 0.001) == 0


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_bad_ratio(llama7b, ratio):
    with pytest.raises(BlockSelectionError):
        blocks_within_ratio(llama7b, ratio)


def test_parse_blocks():
    assert parse_blocks("3,7") == [3, 7]
    assert parse_blocks(" 10-12 , 1") == [10, 11, 12, 1]


@pytest.mark.parametrize("text", ["a", "1,,2", "1.5", "5-3", ""])
def test_parse_blocks_rejects(text):
    with pytest.raises(BlockSelectionError):
        parse_blocks(text)


@pytest.mark.parametrize("blocks", [[32], [-1], [3, 3], [], list(range(32))])
def test_plan_rejects(llama7b, blocks):
    with pytest.raises(BlockSelectionError):
        plan_from_blocks(llama7b, blocks)
