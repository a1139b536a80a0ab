"""Each criterion's maths on hand-built tensors."""

import math

import pytest
import torch

from shortllm.scoring.perplexity import nll_sum, perplexity
from shortllm.scoring.position import chop_order
from shortllm.scoring.similarity import angular_distance, angular_table, best_run, block_influence
from shortllm.scoring.weights import magnitude_importance, taylor_importance, taylor_term


def test_block_influence():
    x = torch.randn(2, 5, 8)
    assert block_influence(x, x) == pytest.approx(0.0, abs=1e-6)
    assert block_influence(x, -x) == pytest.approx(2.0, abs=1e-6)
    assert block_influence(x, 3 * x) == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    a = torch.tensor([[[1.0, 0.0]]])
    assert block_influence(a, torch.tensor([[[0.0, 1.0]]])) == pytest.approx(1.0)


def test_angular_distance():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert angular_distance(a, a) == pytest.approx(0.0, abs=1e-3)  # arccos is steep near 1
    assert angular_distance(a, torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(0.5)
    assert angular_distance(a, -a) == pytest.approx(1.0)


def test_angular_table_and_best_run():
    e = torch.eye(4)
    # States: inputs of blocks 0..3 and the output; blocks 1 and 2 change nothing.
    states = [e[0], e[1], e[1], e[1], e[2]]
    states = [s.view(1, 1, 4).expand(2, 3, 4) for s in states]
    assert angular_table(states, 1) == pytest.approx([0.5, 0.0, 0.0, 0.5])
    assert angular_table(states, 2) == pytest.approx([0.5, 0.0, 0.5])
    assert best_run(angular_table(states, 2), 2, [0, 1, 2, 3]) == 1
    assert best_run(angular_table(states, 2), 2, [0, 2, 3]) == 2  # block 1 protected: the tie-break moves on
    assert best_run(angular_table(states, 2), 2, [0, 3]) is None


def test_magnitude_importance():
    w = [torch.tensor([[1.0, -2.0]]), torch.tensor([3.0])]
    assert magnitude_importance(w, 1) == 6.0
    assert magnitude_importance(w, 2) == 14.0


def test_taylor():
    w, g = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 3.0]])
    assert taylor_term(w, g, 1) == 4.0  # |1| + |-3|
    assert taylor_term(w, g, 2) == 10.0
    assert taylor_importance([(w, g), (w, torch.zeros_like(g))], 1) == 4.0


def test_nll_of_uniform_logits_is_log_vocab():
    logits = torch.zeros(2, 6, 10)
    ids = torch.randint(0, 10, (2, 6))
    nll, count = nll_sum(logits, ids)
    assert count == 10  # the first token of each row has no prediction
    assert perplexity(nll, count) == pytest.approx(10.0)
    assert nll == pytest.approx(10 * math.log(10))


def test_chop_order():
    assert chop_order(5, [0, 1, 2, 3, 4]) == [3, 2, 1, 0, 4]
    assert chop_order(5, [1, 2, 3]) == [3, 2, 1]
