"""The reference protocols: BOS placement (perplexity and lm-eval), GPTQ's C4 evaluation, Gemma's BOS, few-shot on
offline tasks, and HellaSwag's query exactly as lm-eval builds it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from shortllm.data import Corpus
from shortllm.errors import DataError
from shortllm.evaluation.perplexity import perplexity
from shortllm.evaluation.run import EvalRequest, check_fewshot, load_corpus, ppl_plan
from shortllm.evaluation.tasks.utils import read_hellaswag
from tests.conftest import run_cli
from tests.evaluation.helpers import WIKI_LINES
from tests.tiny_models import tiny_config


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(["" if not line.strip() else line for line in WIKI_LINES], "wikitext2", "test", "test")


def _window_nll(model, rows: list[list[int]]) -> tuple[float, int]:
    """Summed NLL and predicted tokens over windows, each scored on its own the plain transformers way."""
    nll = count = 0
    for ids in rows:
        x = torch.tensor([ids])
        with torch.no_grad():
            nll += model(input_ids=x, labels=x, use_cache=False).loss.item() * (len(ids) - 1)
        count += len(ids) - 1
    return nll, count


def test_bos_every_scores_seq_len_text_tokens_per_window(tiny_lm, corpus):
    model, tok = tiny_lm
    seq_len = 12
    ids = tok("\n\n".join(corpus.documents), add_special_tokens=False).input_ids
    rows = [[tok.bos_token_id] + ids[i:i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)][:5]
    nll, count = _window_nll(model, rows)
    result = perplexity(model, tok, corpus, "paper", seq_len, bos_every=True, limit=5)
    assert (result.windows, result.tokens_scored) == (5, 5 * seq_len) == (len(rows), count)
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-4)


@pytest.mark.parametrize("ppl_bos", ["always", "never", "tokenizer"])
def test_ppl_bos_places_bos_as_asked(tiny_lm, corpus, ppl_bos):
    model, tok = tiny_lm
    seq_len = 16
    text = "\n\n".join(corpus.documents)
    plain = tok(text, add_special_tokens=False).input_ids
    stream = {"always": [tok.bos_token_id] + plain, "never": plain, "tokenizer": tok(text).input_ids}[ppl_bos]
    rows = [stream[i * seq_len:(i + 1) * seq_len] for i in range(len(stream) // seq_len)]
    nll, count = _window_nll(model, rows)
    result = perplexity(model, tok, corpus, "paper", seq_len, ppl_bos=ppl_bos)
    assert result.ppl_bos == ppl_bos and result.tokens_in_text == len(stream)
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)
    if ppl_bos == "always":
        assert stream[0] == tok.bos_token_id != plain[0]


def test_bad_ppl_bos_is_refused(tiny_lm, corpus):
    with pytest.raises(DataError, match="unknown --ppl-bos 'first'"):
        perplexity(*tiny_lm, corpus, "paper", 16, ppl_bos="first")


def _c4_dir(root, split: str, n: int = 1105):
    folder = root / "pretrain"
    folder.mkdir(parents=True, exist_ok=True)
    name = {"validation": "c4_en_validation.jsonl", "train": "c4_en_train_first1000.jsonl"}[split]
    docs = [f"Document {i} says the river flows south." if i < 1100 else "ZZZ late document" for i in range(n)]
    (folder / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return docs


def test_c4_gptq_follows_the_gptq_rule(tiny_lm, tmp_path):
    """GPTQ/SLEB datautils: tokenizer(" ".join(first 1100 validation docs)), first 256 windows of seqlen."""
    model, tok = tiny_lm
    docs = _c4_dir(tmp_path, "validation")
    corpus = load_corpus("c4-gptq", tmp_path)
    assert corpus.documents == docs[:1100] and corpus.split == "validation"
    seq_len = 8
    req = EvalRequest(ppl=["c4-gptq"], seq_len=seq_len)
    how = ppl_plan(req, "c4-gptq")
    assert (how["protocol"], how["seq_len"], how["limit"], how["joiner"]) == ("paper", seq_len, 256, " ")
    assert ppl_plan(EvalRequest(ppl=["c4-gptq"]), "c4-gptq")["seq_len"] == 2048

    ids = tok(" ".join(docs[:1100])).input_ids[:256 * seq_len]
    assert len(ids) == 256 * seq_len  # the text is longer than 256 windows: the cap matters
    nll, count = _window_nll(model, [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)])
    result = perplexity(model, tok, corpus, how["protocol"], seq_len, bos_every=False, limit=how["limit"],
                        joiner=how["joiner"])
    assert result.windows == 256 and result.tokens_scored == count
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_c4_gptq_reads_the_train_slice_of_a_data_dir_without_validation(tmp_path, caplog):
    docs = _c4_dir(tmp_path, "train", n=1000)
    corpus = load_corpus("c4-gptq", tmp_path)
    assert corpus.documents == docs and corpus.split == "train" and corpus.name == "c4-gptq"
    assert "no c4 validation split" in caplog.text
    with pytest.raises(DataError, match="no c4 validation split"):
        load_corpus("c4-gptq:validation", tmp_path)  # a split asked for by name is not replaced


def test_eval_records_the_bos_choices(tiny_lm_dir, data_root, tmp_path):
    out = tmp_path / "ev"
    result = run_cli("eval", "-m", tiny_lm_dir, "--ppl", "wikitext2", "--tasks", "none", "--seq-len", "16",
                     "--limit", "2", "--ppl-bos", "always", "--data-dir", data_root,
                     "--device", "cpu", "--out", out)  # --no-add-bos: lm-eval's, refused with --tasks none
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text())
    assert report["settings"]["ppl_bos"] == "always" and report["settings"]["add_bos"] is None
    assert report["models"][0]["ppl_details"]["wikitext2"]["ppl_bos"] == "always"


@pytest.mark.parametrize("arch, expected", [("gemma", True), ("gemma2", True), ("gemma3_text", True),
                                            ("llama", False)])
def test_the_gemma_family_gets_bos_before_every_window(arch, expected):
    config = tiny_config(arch)
    assert ppl_plan(EvalRequest(), "wikitext2", config)["bos_every"] is expected
    assert ppl_plan(EvalRequest(bos_every=False), "wikitext2", config)["bos_every"] is False
    assert ppl_plan(EvalRequest(protocol="sliding"), "wikitext2", config)["bos_every"] is False


def test_lm_eval_gets_the_add_bos_choice(tiny_lm):
    from shortllm.evaluation.lmeval import _lm

    model, tok = tiny_lm
    for choice in (True, False, None):
        assert _lm(model, tok, 2, add_bos=choice).add_bos_token is choice


def test_few_shot_on_offline_tasks_is_refused(tmp_path):
    with pytest.raises(DataError, match="hold only the evaluated split"):
        check_fewshot(5, ["piqa", "boolq"], tmp_path)
    check_fewshot(0, ["piqa"], tmp_path)
    check_fewshot(5, ["piqa"], None)  # lm-eval's own definitions read the training split
    result = run_cli("eval", "--tasks", "piqa", "--ppl", "none", "--num-fewshot", "3", "--data-dir", tmp_path)
    assert result.exit_code == 2 and "--num-fewshot 3" in result.stderr


def _derived_line(row: dict) -> str:
    """The derived file's context line of an ActivityNet row (no WikiHow tags): label: ctx_a ctx_b, as written."""
    return f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b']}".strip()


def test_hellaswag_query_is_lm_evals(tmp_path):
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    rows = [
        {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
         "endings": ["a.", "b.", "c.", "d."], "label": "3"},
        {"activity_label": "Clean and jerk", "ctx_a": "A lady walks to a barbell. She grabs the pole.",
         "ctx_b": "the lady then meets John", "endings": ["a.", "b.", "c.", "d."], "label": "0"},
        {"activity_label": "Home and Garden", "ctx_a": "Pick a sunny spot. Dig a small hole.", "ctx_b": "",
         "endings": ["a.", "b.", "c.", "d."], "label": "1"},
    ]
    wikihow = {"activity_label": "Pets", "ctx_a": "[header] How to feed a cat [title] Buy cat food.", "ctx_b": "",
               "endings": ["Give it [title] now.", "b.", "c.", "d."], "label": "2"}
    lines = [_derived_line(r) for r in rows] + ["Pets: How to feed a cat. Buy cat food."]
    endings = [r["endings"] for r in rows] + [["Give it. now.", "b.", "c.", "d."]]
    labels = [r["label"] for r in rows + [wikihow]]
    path = tmp_path / "hellaswag" / "hellaswag_val_full.txt"
    path.parent.mkdir()
    path.write_text("".join(f"{line}\n{label}\n" + "".join(f"{e}\n" for e in ends)
                            for line, label, ends in zip(lines, labels, endings)))
    expected = process_docs(datasets.Dataset.from_list(rows + [wikihow]))
    ours = read_hellaswag(tmp_path)
    assert [r["query"] for r in ours] == expected["query"]
    assert [r["choices"] for r in ours] == expected["choices"]
    assert ours[1]["query"].endswith("She grabs the pole. The lady then meets john")  # str.capitalize, as lm-eval
