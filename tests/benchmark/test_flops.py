"""FLOPs per token and the ideal speedup, checked against numbers worked out by hand."""

import pytest

from shortllm.benchmark.flops import (FlopsShape, attention_context_flops, efficiency, flops_per_token,
                                      ideal_speedup, ratio, spread)


def test_hand_computed_example():
    # 4 blocks of 250 parameters, a 500-parameter head, queries 8 wide, 10 tokens of context:
    #   2 x (1000 + 500) = 3000 for the matmuls, 4 x 8 x (4 blocks x 10) = 1280 for Q K^T and A V.
    full = FlopsShape(block_params=1000, head_params=500, num_blocks=4, attn_dim=8)
    assert attention_context_flops(full, 10) == 1280
    assert flops_per_token(full, 10) == 4280
    # One block removed: 2 x (750 + 500) + 4 x 8 x 30 = 2500 + 960 = 3460.
    short = FlopsShape(block_params=750, head_params=500, num_blocks=3, attn_dim=8)
    assert flops_per_token(short, 10) == 3460
    ideal = ideal_speedup(4280, 3460)
    assert ideal == pytest.approx(1.2369942, rel=1e-6)
    # Without the context term the ideal would be 3000 / 2500 = 1.2: attention makes depth pruning pay more.
    assert ideal_speedup(flops_per_token(full, 0), flops_per_token(short, 0)) == pytest.approx(1.2)
    assert efficiency(1.2, ideal) == pytest.approx(1.2 / 1.2369942)


def test_sliding_window_blocks_see_at_most_their_window():
    shape = FlopsShape(block_params=0, head_params=0, num_blocks=4, attn_dim=8, windows=(4, None, 4, None))
    assert attention_context_flops(shape, 10) == 4 * 8 * (4 + 10 + 4 + 10)
    assert attention_context_flops(shape, 3) == 4 * 8 * 12  # shorter than the window: no cap


def test_smollm2_minus_seven_blocks_by_hand():
    # SmolLM2-135M: 30 blocks of 3,540,096 params (q,o 576x576; k,v 576x192; MLP 3 x 576x1536; 2 norms),
    # head 49152 x 576 = 28,311,552 (tied, counted anyway), 9 heads x 64 = 576 wide, prompt 64.
    per_block = 2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576
    assert per_block == 3_540_096
    full = FlopsShape(30 * per_block, 49152 * 576, 30, 576)
    short = FlopsShape(23 * per_block, 49152 * 576, 23, 576)
    assert flops_per_token(full, 64) == 273_452_544
    assert flops_per_token(short, 64) == 222_859_008
    assert ideal_speedup(273_452_544, 222_859_008) == pytest.approx(1.22702, abs=1e-5)


def test_ratio_and_efficiency_edge_cases():
    assert ratio(30.0, 20.0) == 1.5  # a rate: higher is better
    assert ratio(2.0, 3.0, higher_is_better=False) == 1.5  # a time: lower is better
    assert ratio(None, 3.0) is None and ratio(1.0, 0.0) is None
    assert efficiency(None, 1.2) is None and efficiency(1.0, None) is None


def test_spread_skips_missing_values():
    assert spread([3.0, 1.0, 2.0, None]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert spread([4.0, 1.0]) == {"median": 2.5, "min": 1.0, "max": 4.0}
    assert spread([None]) == {"median": None, "min": None, "max": None}
