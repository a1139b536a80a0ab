"""`shortllm score` and `shortllm prune --ratio/--num-blocks/--scores` through the CLI."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import run_cli

FAST = ["--samples", "2", "--seq-len", "32", "--device", "cpu"]


def fast(criterion: str) -> list[str]:
    """FAST, without the calibration sizes that magnitude and chop would not read (they are refused)."""
    return FAST[-2:] if criterion in ("magnitude", "chop") else FAST


@pytest.mark.parametrize("criterion", ["ppl", "taylor", "magnitude", "bi", "angular", "sleb", "chop"])
def test_score_writes_its_files(tiny_tok_dir, tmp_path, criterion):
    out = tmp_path / "scores"
    result = run_cli("score", "-m", tiny_tok_dir, "-c", criterion, "-k", "2", "--out", out, *fast(criterion))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "scores.json").read_text())
    assert report["criterion"] == criterion and report["num_blocks"] == 6
    assert report["protected"] == ([0, 5] if criterion == "sleb" else [])  # SLEB's barriers
    assert sorted(report["order"] + report["protected"]) == list(range(6))
    assert report["removal"] == sorted(report["order"][:2])
    assert (out / "block_order.csv").read_text().strip() == ",".join(map(str, report["order"] + report["protected"]))
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "shortllm.json").read_text())
    assert manifest["verb"] == "score" and manifest["results"]["order"] == report["order"]
    # score removes nothing: it says what a prune would remove, and what its scores are
    assert f"A prune with this plan would remove 2 blocks: {', '.join(map(str, report['removal']))}" in result.stdout
    assert "Removing" not in result.stdout and "score = " in result.stdout
    if criterion in ("angular", "chop"):
        a, b = report["removal"]
        assert b == a + 1  # a contiguous run
    if criterion == "chop":
        assert report["removal"] == [3, 4]  # the run just before the last block
    if criterion == "angular":
        assert report["scores"][5] is None and "no run of 2 fits" in result.stdout  # block 5 starts no run of 2


def test_score_of_one_block_is_singular(tiny_tok_dir):
    result = run_cli("score", "-m", tiny_tok_dir, "-c", "chop", "-k", "1", *fast("chop"))
    assert result.exit_code == 0, result.output
    assert "A prune with this plan would remove 1 block: 4" in result.stdout


def test_score_json_and_protection(tiny_tok_dir):
    result = run_cli("score", "-m", tiny_tok_dir, "-c", "taylor+", "--protect-first", "1", "--protect-last", "1",
                     "-k", "2", "--json", *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["protected"] == [0, 5] and sorted(report["order"]) == [1, 2, 3, 4]
    assert report["scores"][0] is None and report["calibration"]["fingerprint"]


def test_score_is_deterministic_for_a_seed(tiny_tok_dir):
    runs = [json.loads(run_cli("score", "-m", tiny_tok_dir, "--json", *FAST).stdout) for _ in range(2)]
    assert runs[0]["scores"] == runs[1]["scores"]
    other = json.loads(run_cli("score", "-m", tiny_tok_dir, "--json", *FAST[:-2], "--seed", "7").stdout)
    assert other["calibration"]["fingerprint"] != runs[0]["calibration"]["fingerprint"]


def test_prune_with_saved_scores_removes_the_first_of_the_order(tiny_tok_dir, tmp_path):
    scores = tmp_path / "scores"
    assert run_cli("score", "-m", tiny_tok_dir, "-k", "2", "--out", scores, *FAST).exit_code == 0
    order = json.loads((scores / "scores.json").read_text())["order"]
    result = run_cli("prune", "-m", tiny_tok_dir, "-k", "3", "--scores", scores, "--out", tmp_path / "p", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["removed"] == sorted(order[:3])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "p").config.num_hidden_layers == 3


@pytest.mark.parametrize("args,needle", [
    (["--ratio", "0"], "outside (0, 1)"),
    (["--ratio", "1"], "outside (0, 1)"),
    (["--ratio", "0.001"], "too small to remove one block"),
    (["--ratio", "0.99"], "would remove all 6 blocks"),
    (["--num-blocks", "6"], "would remove all 6 blocks"),
    (["--ratio", "0.2", "--blocks", "1"], "exactly one of"),
    (["-k", "2", "-c", "nope"], "unknown criterion 'nope'"),
    (["-k", "2", "--samples", "0"], "--samples 0"),
    (["-k", "2", "--seq-len", "512"], "longer than the context of"),
    (["-k", "5", "--protect-first", "2"], "only 4 are not protected"),
    (["-k", "1", "-c", "taylor+"], "leaves none of the 6"),
])
def test_prune_bad_input(tiny_tok_dir, tmp_path, args, needle):
    result = run_cli("prune", "-m", tiny_tok_dir, *args, "--out", tmp_path / "o", "--device", "cpu")
    assert_one_line_error(result, needle)
    assert list(tmp_path.iterdir()) == []


def test_too_small_ratio_suggests_one_that_works(tiny_tok_dir, tmp_path):
    result = run_cli("prune", "-m", tiny_tok_dir, "--ratio", "0.001", "--dry-run")
    suggestion = float(result.stderr.split("Use --ratio ")[1].split()[0])
    ok = run_cli("prune", "-m", tiny_tok_dir, "--ratio", str(suggestion), "-c", "magnitude", "--dry-run", "--json")
    assert ok.exit_code == 0, ok.output
    assert len(json.loads(ok.stdout)["removed"]) == 1


def test_seq_len_longer_than_the_text(tiny_tok_dir, tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("Only a few words here.\n")
    result = run_cli("score", "-m", tiny_tok_dir, "--data", text, "--seq-len", "64", "--samples", "2")
    assert_one_line_error(result)
    assert "64" in result.stderr


def test_scores_from_another_model_refused(tiny_tok_dir, tiny_llama_dir, tmp_path):
    scores = tmp_path / "scores"
    assert run_cli("score", "-m", tiny_tok_dir, "-c", "magnitude", "--out", scores).exit_code == 0
    result = run_cli("prune", "-m", tiny_llama_dir, "-k", "1", "--scores", scores, "--out", tmp_path / "o")
    assert_one_line_error(result, "computed for another model")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_prune_ratio_embedded_model_follows_score_order(demo_dir, tmp_path):
    calib = ["--samples", "2", "--seq-len", "32"]
    scored = run_cli("score", "--out", tmp_path / "scores", "--json", *calib)
    assert scored.exit_code == 0, scored.output
    order = json.loads(scored.stdout)["order"]
    result = run_cli("prune", "--ratio", "0.2", "--out", tmp_path / "pruned", "--json", *calib)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["removed"] == sorted(order[:7])  # DESIGN.md: 20% of the embedded model is 7 blocks
    assert info["achieved_ratio"] <= 0.2 and info["num_blocks_after"] == 23
    again = run_cli("prune", "--ratio", "0.2", "--scores", tmp_path / "scores", "--dry-run", "--json")
    assert json.loads(again.stdout)["removed"] == info["removed"]

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    tok = AutoTokenizer.from_pretrained(tmp_path / "pruned")
    ids = tok("Depth pruning removes", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4
