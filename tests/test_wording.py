"""Counts agree with their nouns wherever shortllm prints them (no "1 tokens")."""

from __future__ import annotations

import pytest

from shortllm.errors import DataError
from shortllm.wording import plural


def test_plural():
    assert plural(1, "token") == "1 token"
    assert plural(0, "token") == "0 tokens"
    assert plural(2, "block") == "2 blocks"
    assert plural(2, "process", "processes") == "2 processes"
    assert plural(1, "process", "processes") == "1 process"
    assert plural(1024, "token", thousands=True) == "1,024 tokens"


def test_a_one_token_corpus_says_token():
    from shortllm.evaluation.perplexity import plan_windows

    with pytest.raises(DataError) as err:
        plan_windows(1, "sliding", 16, None, False, None, "tiny.txt")
    assert err.value.message == "tiny.txt has only 1 token: nothing to predict"


def test_too_short_seq_len_hint_names_what_is_needed_not_128():
    from shortllm.evaluation.perplexity import check_protocol

    with pytest.raises(DataError) as err:
        check_protocol("paper", 1, None, False)
    assert err.value.hint == "use --seq-len 2 or more"


def test_one_unprotected_block_is():
    from shortllm.errors import BlockSelectionError
    from shortllm.scoring.run import check_candidates

    with pytest.raises(BlockSelectionError) as err:
        check_candidates(2, [3], [0, 1, 2])
    assert err.value.message == "2 blocks must be removed but only 1 is not protected (protected: 0, 1, 2)"
