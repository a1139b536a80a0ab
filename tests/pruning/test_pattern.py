"""llama.cpp's index-derived block roles: the rule table, the guard, and the --keep-attention-pattern selection."""

from __future__ import annotations

import itertools
import json

import pytest

from shortllm.errors import BlockSelectionError
from shortllm.pruning.pattern import (check_pattern, moved_blocks, pattern_allows, pattern_choice, restrict,
                                      rules_for_gguf, rules_for_hf)
from tests.conftest import run_cli

GEMMA3 = rules_for_gguf("gemma3", {})
GEMMA2 = rules_for_gguf("gemma2", {})


def _roles(rules, n, removed=()):
    kept = [i for i in range(n) if i not in set(removed)]
    return [tuple(r.special(j, len(kept)) for r in rules) for j in range(len(kept))]


def test_the_rules_follow_llama_cpp_set_swa_pattern():
    # llama_hparams::set_swa_pattern(n): block il is sliding iff il % n < n - 1, so global blocks close each period
    assert [i for i in range(12) if GEMMA3[0].special(i, 12)] == [5, 11]
    assert [i for i in range(6) if GEMMA2[0].special(i, 6)] == [1, 3, 5]
    assert rules_for_gguf("gemma3", {"gemma3.attention.sliding_window_pattern": 4})[0].period == 4
    assert rules_for_gguf("gemma3", {"gemma3.attention.sliding_window_pattern": [True, False]}) == []
    assert rules_for_gguf("llama", {}) == [] and rules_for_gguf("qwen2", {}) == []
    assert rules_for_gguf("olmo2", {}) == [] and rules_for_gguf("olmo2", {"olmo2.attention.sliding_window": 4096})
    assert rules_for_gguf("llama4", {"llama4.attention.sliding_window": 0}) == []
    exaone = rules_for_gguf("exaone4", {})[0]  # a pattern only the 64-block model has
    assert exaone.special(3, 64) and not exaone.special(4, 64) and exaone.special(4, 63)


def test_guard_names_the_blocks_that_change_role():
    assert pattern_allows([0, 1, 2, 3, 4, 5], 12, GEMMA3) and pattern_allows([9, 10, 11], 12, GEMMA3)
    assert not pattern_allows([0], 12, GEMMA3)
    assert [(m.block, m.new_index) for m in moved_blocks([0], 12, GEMMA3)] == [(5, 4), (6, 5), (11, 10)]
    with pytest.raises(BlockSelectionError) as err:
        check_pattern([0], 12, GEMMA3)
    assert "--keep-attention-pattern" in err.value.one_line() and "\n" not in err.value.one_line()
    with pytest.raises(BlockSelectionError) as err:  # EXAONE 4 32B: any cut makes llama.cpp drop the pattern
        check_pattern(list(range(3)), 64, rules_for_gguf("exaone4", {}))
    assert "kept blocks 4 (sliding-window -> full-attention)" in err.value.one_line()
    check_pattern([0], 12, [])  # no rules, nothing to keep


@pytest.mark.parametrize(("rules", "n", "k"), [(GEMMA3, 12, 6), (GEMMA3, 12, 3), (GEMMA2, 8, 2), (GEMMA2, 8, 3)])
def test_restrict_is_the_best_ranked_set_that_keeps_every_role(rules, n, k):
    order = [3, 7, 1, 9, 0, 4, 2, 8, 6, 5, 10, 11][:n] if n == 12 else [2, 5, 0, 7, 3, 1, 6, 4]
    chosen = restrict(order, k, n, rules)
    assert len(chosen) == k and pattern_allows(chosen, n, rules)
    assert _roles(rules, n, chosen) == [_roles(rules, n)[i] for i in range(n) if i not in chosen]
    rank = {b: r for r, b in enumerate(order)}
    best = min((c for c in itertools.combinations(range(n), k) if pattern_allows(c, n, rules)),
               key=lambda c: sum(rank[b] for b in c))
    assert sum(rank[b] for b in chosen) == sum(rank[b] for b in best)  # exact, checked by brute force


def test_restrict_respects_protection_and_says_when_nothing_fits():
    assert restrict([0, 1, 2, 3, 4, 5], 6, 12, GEMMA3) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(BlockSelectionError, match="without moving llama.cpp's pattern"):
        restrict([0, 1, 2], 2, 12, GEMMA3)  # blocks 3..11 protected: no 2 of 0..2 keep the roles
    own = pattern_choice(lambda k: [0, 1][:k], [0, 1, 2, 10, 11], 12, GEMMA3)
    assert own(2) == [10, 11]  # the criterion's {0, 1} would move block 5: the best-ranked set that keeps roles
    assert pattern_choice(lambda k: [10, 11][:k], [10, 11], 12, GEMMA3)(2) == [10, 11]  # already fine: kept


def test_hf_families_map_to_the_gguf_rules(tmp_path):
    from tests.tiny_models import tiny_config

    assert rules_for_hf(tiny_config("gemma3_text")) == GEMMA3
    assert rules_for_hf(tiny_config("gemma2")) == GEMMA2
    assert rules_for_hf(tiny_config("llama")) == []


def test_keep_attention_pattern_restricts_hf_prunes_of_gemma3(tmp_path, one_thread):
    from tests.tiny_models import tiny_model

    src = tmp_path / "gemma3"
    tiny_model("gemma3_text", num_layers=12).save_pretrained(src)
    refused = run_cli("prune", "-m", src, "-b", "0", "--keep-attention-pattern", "--out", tmp_path / "a")
    assert refused.exit_code == 2 and "a GGUF converted from this checkpoint" in refused.stderr
    result = run_cli("prune", "-m", src, "-k", "6", "-c", "magnitude", "--keep-attention-pattern",
                     "--out", tmp_path / "b", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert pattern_allows(info["removed"], 12, GEMMA3) and info["runtime_patterns"]["kept"]
    plain = run_cli("prune", "-m", src, "-b", "0", "--out", tmp_path / "c", "--json")
    assert plain.exit_code == 0  # transformers reads layer_types: allowed, but recorded and carded
    assert json.loads(plain.stdout)["runtime_patterns"]["moved_blocks"] == [5, 6, 11]
    assert "a llama.cpp conversion of this checkpoint would not be" in (tmp_path / "c" / "README.md").read_text()
