"""``--criterion auto``: candidates from every cheap criterion and every contiguous run, measured exactly on
held-out windows disjoint from the scoring windows; the lowest wins; refinement only ever improves; the size
request, protection and a pattern restriction hold for every candidate."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from shortllm.models.loading import LoadSettings, load_model
from shortllm.models.params import count_params
from shortllm.models.surgery import drop_blocks
from shortllm.pruning.plan import fits_ratio
from shortllm.scoring.perplexity import nll_sum, perplexity
from shortllm.scoring.run import Calibration, ScoreOptions, score_loaded
from shortllm.scoring.search import (RUN_SOURCE, SOURCES, SearchOptions, contiguous_runs, heldout_windows,
                                     merge_candidates, swaps)
from tests.conftest import run_cli
from tests.training.helpers import make_tiny_model_with_tokenizer

N = 6
CAL = Calibration(samples=2, seq_len=16)


def test_contiguous_runs_avoid_protected_blocks():
    assert contiguous_runs([1, 2, 3, 5, 6], 2) == [[1, 2], [2, 3], [5, 6]]
    assert contiguous_runs([1, 2, 3, 5, 6], 3) == [[1, 2, 3]]
    assert contiguous_runs([0, 2], 2) == []


def test_swaps_trade_one_block_for_the_nearest_kept_one():
    # run 2-4 among 0..6: each removed block may go back for block 1 or block 5
    got = swaps([2, 3, 4], range(7))
    assert [1, 3, 4] in got and [2, 3, 5] in got and [1, 2, 4] in got and [2, 4, 5] in got
    assert all(len(s) == 3 and s != [2, 3, 4] for s in got)
    assert swaps([2, 3, 4], [2, 3, 4]) == []  # nothing kept to trade for


def test_merge_keeps_every_source_and_only_the_largest_cuts():
    merged = merge_candidates([("ppl", [3, 1]), ("bi", [1, 3]), ("chop", [4]), (RUN_SOURCE, [2, 3])])
    assert [(c.removed, c.sources) for c in merged] == [([1, 3], ["ppl", "bi"]), ([2, 3], [RUN_SOURCE])]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = make_tiny_model_with_tokenizer(tmp_path_factory.mktemp("search") / "tiny", num_layers=N)
    return load_model(str(path), LoadSettings(device="cpu", dtype="float32"))


def _heldout_ppl_naive(loaded, report, removed) -> float:
    """Held-out perplexity of a real copy with the blocks dropped (the slow, obviously right way)."""
    ids, _ = heldout_windows(loaded.tokenizer, CAL, report["extras"]["heldout_tokens"])
    model = copy.deepcopy(loaded.model)
    drop_blocks(model, removed)
    with torch.no_grad():
        return perplexity(*nll_sum(model(ids, use_cache=False).logits, ids))


@pytest.fixture(scope="module")
def report(loaded):
    torch.set_num_threads(1)
    return score_loaded(loaded, ScoreOptions(criterion="auto", calibration=CAL,
                                             search=SearchOptions(tokens=128, refine=3)), 2)


def test_every_source_proposes_and_the_lowest_wins(loaded, report):
    extras = report["extras"]
    sources = {s for c in extras["candidates"] for s in c["sources"]}
    assert set(SOURCES) | {RUN_SOURCE} <= sources
    runs = [c["removed"] for c in extras["candidates"] if RUN_SOURCE in c["sources"]]
    assert sorted(runs) == contiguous_runs(range(N), 2)  # every run of 2, each once
    keys = [tuple(c["removed"]) for c in extras["candidates"]]
    assert len(keys) == len(set(keys))  # de-duplicated
    ppls = [c["heldout_ppl"] for c in extras["candidates"]]
    assert ppls == sorted(ppls)
    best = extras["candidates"][0]
    steps = extras["refine_steps"]
    final = steps[-1] if steps else best
    assert report["removal"] == final["removed"] == extras["winner"]["removed"]
    assert extras["winner"]["heldout_ppl"] <= best["heldout_ppl"]
    # refinement only ever improves, one swap at a time
    previous = best
    for step in steps:
        assert step["heldout_ppl"] < previous["heldout_ppl"]
        assert len(set(step["removed"]) ^ set(previous["removed"])) == 2
        previous = step


def test_heldout_perplexity_is_exact(loaded, report):
    # the fast evaluation (cached block inputs, bypass) equals dropping the blocks from a copy
    for cand in report["extras"]["candidates"][:2] + report["extras"]["candidates"][-1:]:
        assert cand["heldout_ppl"] == pytest.approx(_heldout_ppl_naive(loaded, report, cand["removed"]), rel=1e-4)


def test_heldout_windows_come_from_other_documents(tmp_path, loaded):
    # documents with their index spelled in every word: a window's text names the document it came from
    docs = [" ".join(f"doc{i}word{j}" for j in range(60)) for i in range(40)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cal = Calibration(data=str(tmp_path / "docs.jsonl"), samples=6, seq_len=16)
    from shortllm.scoring.run import calibration_ids

    scoring, _ = calibration_ids(loaded, cal)
    held, info = heldout_windows(loaded.tokenizer, cal, 20 * 16)

    def documents(ids) -> set[int]:
        return {int(m) for row in ids for m in re.findall(r"doc(\d+)word\d+", loaded.tokenizer.decode(row))}

    assert held.shape == (20, 16) and info["tokens"] == 320
    assert documents(scoring) and documents(held)
    assert documents(scoring).isdisjoint(documents(held))


def test_ratio_protection_and_pattern_hold_for_every_candidate(loaded):
    counts = count_params(loaded.model)
    ratio = 3.5 * counts.per_block[0] / counts.total  # 3 blocks fit, 4 do not
    banned = 3
    rep = score_loaded(loaded, ScoreOptions(criterion="auto", calibration=CAL, protect_first=1,
                                            search=SearchOptions(tokens=64, refine=2)), 4, ratio=ratio,
                       pattern_check=lambda removed: banned not in removed)
    cands = [c["removed"] for c in rep["extras"]["candidates"]] + [s["removed"] for s in rep["extras"]["refine_steps"]]
    # a source whose own cut breaks the restriction is shrunk until it keeps it (like the ratio); only the
    # largest cuts proposed are compared
    size = len(cands[0])
    assert size >= 2 and all(len(c) == size for c in cands)
    for removed in cands:
        assert fits_ratio(counts, ratio, removed) and 0 not in removed and banned not in removed
    assert rep["num_remove"] == size and rep["removal"] == rep["extras"]["winner"]["removed"]


def test_prune_auto_records_the_winner(tmp_path, one_thread):
    src = make_tiny_model_with_tokenizer(tmp_path / "tiny", num_layers=4)
    result = run_cli("prune", "-m", src, "-k", "1", "-c", "auto", "--samples", "2", "--seq-len", "16",
                     "--search-tokens", "64", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "shortllm.json").read_text())
    assert "lowest held-out perplexity" in manifest["results"]["how"]
    search = manifest["results"]["scores"]["search"]
    assert manifest["results"]["removed"] == search["winner"]["removed"] and search["candidates"]
    assert "lowest held-out perplexity" in (tmp_path / "out" / "README.md").read_text()
    score = run_cli("score", "-m", src, "-k", "1", "-c", "auto", "--samples", "2", "--seq-len", "16",
                    "--search-tokens", "64", "--out", tmp_path / "scores")
    assert score.exit_code == 0, score.stderr
    assert "held-out ppl" in score.stdout and "Chosen:" in score.stdout
    saved = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert saved["removal"] == saved["extras"]["winner"]["removed"]
    assert (tmp_path / "scores" / "scores.png").stat().st_size > 0
