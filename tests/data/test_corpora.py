"""Corpora: the built-in pydoc split, local files, the data-directory layout, hub configs, errors."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

from shortllm.data import KNOWN_DATASETS, Corpus, data_dir, load_documents
from shortllm.data.named import DATASETS
from shortllm.errors import DataError
from tests.data.conftest import PTB_LINES, WIKI_LINES


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv("SHORTLLM_DATA_DIR", raising=False)


# --- pydoc ---------------------------------------------------------------------------------------

def test_pydoc_splits_are_disjoint_and_cover_every_topic():
    from pydoc_data.topics import topics

    train, test = load_documents("pydoc", "train"), load_documents("pydoc:test")
    assert (train.split, test.split, train.source) == ("train", "test", "builtin")
    assert not set(train.documents) & set(test.documents)
    assert len(train) + len(test) == len(topics) == len(load_documents("pydoc", "all"))
    assert len(test) == len(topics) // 5
    assert load_documents("pydoc:validation").documents == test.documents


def test_pydoc_is_deterministic_and_defaults_to_test():
    a, b = load_documents("pydoc", "train"), load_documents("pydoc", "train")
    assert a.documents == b.documents and a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 16
    assert load_documents("pydoc").split == "test"


def test_spec_split_wins_over_argument():
    assert load_documents("pydoc:test", "train").split == "test"


# --- Corpus ----------------------------------------------------------------------------------------

def test_fingerprint_depends_on_document_boundaries():
    one, two = Corpus(["ab"], "x", "all", "builtin"), Corpus(["a", "b"], "x", "all", "builtin")
    assert one.fingerprint() != two.fingerprint()
    assert two.joined() == "a\n\nb" and two.joined(" ") == "a b"


# --- local files -----------------------------------------------------------------------------------

def test_txt_documents_are_blank_line_chunks(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("First doc\nline two\n\n  \n\nSecond doc\r\n\r\nThird\n", encoding="utf-8")
    corpus = load_documents(str(f))
    assert corpus.documents == ["First doc\nline two", "Second doc", "Third"]
    assert (corpus.name, corpus.split, corpus.source) == ("notes.txt", "all", str(f))


def test_jsonl_with_text_field(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"body": "one"}\n\n{"body": "two"}\n')
    assert load_documents(str(f), text_field="body").documents == ["one", "two"]
    with pytest.raises(DataError, match="no 'text' field .*body"):
        load_documents(str(f))


def test_json_list_object_and_jsonl_in_disguise(tmp_path):
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    assert load_documents(str(lst)).documents == ["a", "b"]
    shard = tmp_path / "c4-shard.json.gz"  # C4 shards are JSON lines named .json.gz
    shard.write_bytes(gzip.compress(b'{"text": "x"}\n{"text": "y"}\n'))
    assert load_documents(str(shard)).documents == ["x", "y"]


def test_parquet_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"content": ["p", "q"], "id": [1, 2]}), f)
    assert load_documents(str(f), text_field="content").documents == ["p", "q"]
    with pytest.raises(DataError, match="no column 'text'"):
        load_documents(str(f))


def test_directory_reads_supported_files_in_name_order(tmp_path):
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.jsonl").write_text('{"text": "ay"}\n')
    (tmp_path / "skip.csv").write_text("x,y")
    assert load_documents(str(tmp_path)).documents == ["ay", "bee"]


@pytest.mark.parametrize("content", ["", "\n \n\n", '{"text": ""}\n'])
def test_empty_text_is_an_error(tmp_path, content):
    f = tmp_path / ("e.jsonl" if "{" in content else "e.txt")
    f.write_text(content)
    with pytest.raises(DataError, match="no text in .*0 characters"):
        load_documents(str(f))


def test_missing_paths_and_unknown_names():
    with pytest.raises(DataError, match="no such file"):
        load_documents("missing/corpus.txt")
    with pytest.raises(DataError, match="unknown dataset 'wikitext3'.*pydoc, wikitext2, ptb"):
        load_documents("wikitext3")


def test_empty_directory_and_bad_json(tmp_path):
    with pytest.raises(DataError, match="holds no text files"):
        load_documents(str(tmp_path))
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not valid JSON"):
        load_documents(str(f))


# --- data directory layout -------------------------------------------------------------------------

def test_data_dir_resolution(tmp_path, monkeypatch):
    assert data_dir() is None
    monkeypatch.setenv("SHORTLLM_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir(tmp_path / ".") == tmp_path / "."
    with pytest.raises(DataError, match="does not exist"):
        data_dir(tmp_path / "nope")


def test_wikitext_rows_match_hugging_face(layout_dir):
    corpus = load_documents("wikitext2", data_dir=layout_dir)
    assert corpus.split == "test" and corpus.source.endswith("wiki.test.raw")
    assert corpus.documents == ["" if not line.strip() else line for line in WIKI_LINES]
    assert corpus.documents[1] == " = Title = \n"
    assert load_documents("wikitext2:valid", data_dir=layout_dir).split == "validation"


def test_ptb_rows_are_stripped_lines(layout_dir, monkeypatch):
    monkeypatch.setenv("SHORTLLM_DATA_DIR", str(layout_dir))
    corpus = load_documents("ptb", "train")
    assert corpus.documents == [line.strip() for line in PTB_LINES]
    assert corpus.separator == " " and corpus.split == "train"


def test_c4_train_from_layout(layout_dir):
    corpus = load_documents("c4", "train", data_dir=layout_dir)
    assert corpus.documents == [f"document {i} about things" for i in range(3)]


@pytest.mark.parametrize(("spec", "expected"), [
    ("wikitext2:train", "wikitext-2-raw/wiki.train.raw"),
    ("c4:validation", "pretrain/c4_en_validation.jsonl"),
    ("slimpajama:train", "pretrain/slimpajama_train.jsonl"),
])
def test_missing_layout_file_names_the_file(layout_dir, spec, expected):
    with pytest.raises(DataError) as info:
        load_documents(spec, data_dir=layout_dir)
    assert str(layout_dir / expected) in info.value.message
    assert "docs/data.md" in info.value.hint


def test_unknown_split_lists_the_known_ones(layout_dir):
    with pytest.raises(DataError, match="ptb has no split 'dev2'"):
        load_documents("ptb:dev2", data_dir=layout_dir)


def test_relative_file_is_found_in_data_dir(layout_dir):
    corpus = load_documents("pretrain/c4_en_train_first1000.jsonl", data_dir=layout_dir)
    assert len(corpus) == 3


# --- hub -------------------------------------------------------------------------------------------

def test_every_known_name_is_loadable():
    assert set(KNOWN_DATASETS) == {"pydoc", *DATASETS}


@pytest.mark.parametrize(("spec", "call", "field"), [
    ("wikitext2:train", ("wikitext", "wikitext-2-raw-v1", "train"), "text"),
    ("ptb:validation", ("ptb_text_only", "penn_treebank", "validation"), "sentence"),
    ("c4:validation", ("allenai/c4", None, "validation"), "text"),
])
def test_hub_configs(monkeypatch, spec, call, field):
    import datasets

    seen = {}

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        seen.update(args=(path, name, split), kwargs=kwargs)
        return {field: ["row one", "row two"]}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_documents(spec)
    assert seen["args"] == call
    assert corpus.documents == ["row one", "row two"] and corpus.source.startswith("hf:" + call[0])
    if spec.startswith("c4"):
        assert seen["kwargs"]["data_files"] == {"validation": "en/c4-validation.00000-of-00008.json.gz"}


def test_hub_failure_is_a_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"cannot load slimpajama .*hub cannot be reached \(offline\)") as info:
        load_documents("slimpajama")
    assert info.value.hint.startswith("pass --data-dir (or set SHORTLLM_DATA_DIR) with a local copy")


def test_offline_without_data_dir_raises_data_error(tmp_path):
    """The real ``datasets`` in a fresh process with HF_DATASETS_OFFLINE=1 and an empty cache."""
    env = {k: v for k, v in os.environ.items() if k != "SHORTLLM_DATA_DIR"}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    code = (
        "from shortllm.data import load_documents\n"
        "from shortllm.errors import DataError\n"
        "try:\n    load_documents('wikitext2')\n"
        "except DataError as e:\n    print('DATAERROR', e.one_line())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True,
                            text=True, timeout=120)
    assert "DATAERROR cannot load wikitext2" in result.stdout, result.stderr[-2000:]
