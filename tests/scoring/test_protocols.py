"""The reference projects' protection rules: Shortened LLaMA's "+" for any criterion, SLEB's barriers, and BOS
on calibration windows for the Gemma family."""

from __future__ import annotations

import json

import pytest

from shortllm.scoring.registry import get_criterion
from shortllm.scoring.run import Calibration, default_protection, resolve_add_bos
from tests.conftest import run_cli
from tests.tiny_models import tiny_config

FAST = ["--samples", "2", "--seq-len", "16", "--device", "cpu"]


@pytest.mark.parametrize("name", ["ppl", "taylor", "magnitude", "bi", "sleb"])
def test_plus_protects_the_first_4_and_last_2_blocks_of_any_criterion(name):
    criterion = get_criterion(name)
    assert default_protection(criterion, plus=True) == (4, 2)
    assert default_protection(criterion, plus=True) == (get_criterion("taylor+").protect_first,
                                                         get_criterion("taylor+").protect_last)


def test_sleb_has_barriers_by_default_and_they_can_be_lifted():
    sleb = get_criterion("sleb")
    assert default_protection(sleb) == (1, 1)
    assert default_protection(sleb, sleb_barriers=False) == (0, 0)
    assert default_protection(get_criterion("ppl"), sleb_barriers=False) == (0, 0)


def test_sleb_never_removes_the_first_or_last_block(tiny_tok_dir, tmp_path):
    out = tmp_path / "on"
    result = run_cli("score", "-m", tiny_tok_dir, "-c", "sleb", "-k", "4", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "scores.json").read_text())
    assert report["protected"] == [0, 5] and report["sleb_barriers"] is True
    assert sorted(report["removal"]) == [1, 2, 3, 4]  # 4 of 6 blocks: only the inner ones can go

    result = run_cli("score", "-m", tiny_tok_dir, "-c", "sleb", "-k", "5", "--no-sleb-barriers", "--json", *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["protected"] == [] and len(report["removal"]) == 5 and report["sleb_barriers"] is False


def test_plus_on_the_command_line_is_recorded_and_protects(tiny_tok_dir):
    # 6 blocks: --plus alone would protect all of them; --protect-first still overrides the first part.
    result = run_cli("score", "-m", tiny_tok_dir, "-c", "magnitude", "-k", "1", "--plus", "--protect-first", "1",
                     "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["protected"] == [0, 4, 5] and report["plus"] is True
    assert set(report["order"]) == {1, 2, 3}
    result = run_cli("score", "-m", tiny_tok_dir, "-c", "magnitude", "-k", "1", "--plus", "--device", "cpu")
    assert result.exit_code == 2 and "leaves none of the 6" in result.stderr


@pytest.mark.parametrize("arch, expected", [("gemma", True), ("gemma2", True), ("gemma3_text", True),
                                            ("llama", False), ("qwen2", False)])
def test_calibration_bos_is_on_for_the_gemma_family_unless_asked(arch, expected):
    config = tiny_config(arch)
    assert resolve_add_bos(Calibration(), config).add_bos is expected
    assert resolve_add_bos(Calibration(add_bos=False), config).add_bos is False
    assert resolve_add_bos(Calibration(add_bos=True), config).add_bos is True
