"""Streaming: documents read lazily give what loading gives; packed blocks resume exactly from any position."""

from __future__ import annotations

import gzip
import itertools
import json
import random
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shortllm.data import (
    StreamPosition,
    iter_blocks,
    load_documents,
    pack_documents,
    stream_documents,
)
from shortllm.data.corpora import Corpus
from shortllm.errors import DataError


def blank_line_chunks(text: str) -> list[str]:
    """The .txt rule of docs/data.md, stated as a regex over the whole file (the in-memory reading)."""
    text = text.replace("\r\n", "\n")
    return [c.strip() for c in re.split(r"\n[ \t\f\v]*\n", text) if c.strip()]


def random_text(rng: random.Random) -> str:
    pieces = ["word", "two words", "", " ", "\t", "\f", "\u00a0", "x\r", "tail  "]
    lines = [" ".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(0, 30))]
    ends = ["\n", "\r\n"]
    text = "".join(line + rng.choice(ends) for line in lines)
    return text if rng.random() < 0.5 else text.rstrip("\r\n")


def test_streamed_txt_follows_the_blank_line_rule(tmp_path):
    rng = random.Random(0)
    for i in range(300):
        text = random_text(rng)
        path = tmp_path / f"t{i}.txt"
        path.write_bytes(text.encode("utf-8"))
        assert list(stream_documents(str(path))) == blank_line_chunks(text), repr(text)


def _write_formats(root):
    rows = [{"text": f"doc {i}\n\nwith a blank line", "id": i} for i in range(5)]
    (root / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + "\n")
    (root / "b.json").write_text(json.dumps(rows[2:4], indent=2))
    with gzip.open(root / "c.json.gz", "wt") as f:  # C4 shards: JSON lines named .json.gz
        f.write("".join(json.dumps(r) + "\n" for r in rows[4:]))
    pq.write_table(pa.table({"text": ["p0", None, "p2"] * 700}), root / "d.parquet", row_group_size=500)
    (root / "e.txt").write_text("first\n\nsecond\n \nthird\n")
    (root / "notes.md").write_text("not read")
    return root


@pytest.mark.parametrize("spec", ["a.jsonl", "b.json", "c.json.gz", "d.parquet", "e.txt", "."])
def test_stream_gives_what_load_gives_for_every_file_format(tmp_path, spec):
    root = _write_formats(tmp_path)
    path = str(root / spec)
    loaded = load_documents(path)
    streamed = stream_documents(path)
    assert list(streamed) == loaded.documents
    assert list(streamed) == loaded.documents  # iterating again starts over
    assert (streamed.name, streamed.split, streamed.source) == (loaded.name, loaded.split, loaded.source)


@pytest.mark.parametrize("spec", ["wikitext2:test", "ptb:train", "c4:train", "pydoc:train", "pydoc"])
def test_stream_gives_what_load_gives_for_named_datasets(layout_dir, spec):
    loaded = load_documents(spec, "train", data_dir=layout_dir)
    streamed = stream_documents(spec, "train", data_dir=layout_dir)
    assert list(streamed) == loaded.documents
    assert (streamed.name, streamed.split, streamed.source) == (loaded.name, loaded.split, loaded.source)


def test_stream_reads_lazily(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n{broken\n")
    stream = stream_documents(str(path))  # opening reads nothing
    assert list(itertools.islice(stream, 2)) == ["one", "two"]
    with pytest.raises(DataError, match=r"big\.jsonl:3 is not valid JSON"):
        list(stream)


def test_stream_errors_that_need_no_reading_come_at_once(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        stream_documents(str(tmp_path / "missing.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no text files"):
        stream_documents(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no split 'bogus'"):
        stream_documents("ptb:bogus")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"fine line\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"not UTF-8 text \(invalid continuation byte at byte 13\)"):
        list(stream_documents(str(bad)))


def test_stream_fingerprint_is_cheap_and_tracks_the_files(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("alpha\n\nbeta\n")
    first = stream_documents(str(path)).fingerprint()
    assert stream_documents(str(path)).fingerprint() == first
    path.write_text("alpha\n\ngamma\n")
    assert stream_documents(str(path)).fingerprint() != first
    assert stream_documents("pydoc:train").fingerprint() == load_documents("pydoc:train").fingerprint()
    assert stream_documents("pydoc:test").fingerprint() != stream_documents("pydoc:train").fingerprint()


def test_hub_stream_is_the_whole_split_without_the_row_limit(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, config=None, split=None, streaming=False, **kwargs):
        calls.append((path, config, split, streaming, kwargs))
        return ({"text": f"row {i}"} for i in range(20_005))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("SHORTLLM_DATA_DIR", raising=False)
    stream = stream_documents("slimpajama:train")
    assert calls == []  # nothing fetched before iteration
    rows = list(stream)
    assert len(rows) == 20_005 and rows[-1] == "row 20004"  # load_documents keeps only the first 20,000
    assert calls == [("DKYoon/SlimPajama-6B", None, "train", True, {})]
    assert stream.source == "hf:DKYoon/SlimPajama-6B"


def test_hub_stream_failure_is_a_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.delenv("SHORTLLM_DATA_DIR", raising=False)
    with pytest.raises(DataError, match=r"cannot load c4 \(hf:allenai/c4, train\): the Hugging Face hub cannot be reached \(offline\)"):
        list(stream_documents("c4:train"))


# --------------------------------------------------------------------------------------------- packing


@pytest.fixture(scope="module")
def docs():
    from pydoc_data.topics import topics

    keys = sorted(topics)[:9]
    out = [topics[k][:700] for k in keys]
    out[2] = out[5] = ""  # empty documents are skipped but still counted by positions
    out[7] = "short"
    return out


def test_blocks_equal_packed_documents(tokenizer, docs):
    packed = pack_documents(tokenizer, Corpus(docs, "t", "all", "test"), seq_len=48)
    blocks = [b for b, _ in iter_blocks(tokenizer, docs, 48, batch_size=2)]
    assert packed.tolist() == blocks
    assert len(blocks) >= 10


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_blocks_resume_exactly_from_every_position(tokenizer, docs, batch_size):
    every = list(iter_blocks(tokenizer, docs, 48, batch_size=batch_size))
    assert len(every) == len(pack_documents(tokenizer, Corpus(docs, "t", "all", "test"), seq_len=48))
    for k, (_, position) in enumerate(every):
        rest = [b for b, _ in iter_blocks(tokenizer, docs, 48, start=position, batch_size=batch_size)]
        assert rest == [b for b, _ in every[k + 1:]], (k, position)
    assert every[-1][1].doc <= len(docs)


def test_blocks_skip_documents_before_the_start_without_reading_them(tokenizer, docs):
    every = list(iter_blocks(tokenizer, docs, 48))
    k, position = next((k, p) for k, (_, p) in enumerate(every) if p.doc >= 3 and p.offset > 0)

    class Unread:
        def __bool__(self):
            raise AssertionError("a document before the start position was looked at")

    def poisoned():
        for i, d in enumerate(docs):
            yield Unread() if i < position.doc else d

    rest = [b for b, _ in iter_blocks(tokenizer, poisoned(), 48, start=position)]
    assert rest == [b for b, _ in every[k + 1:]]
    assert StreamPosition() == StreamPosition(0, 0)


def flat_blocks(tokenizer, documents, seq_len):
    """The packing rule written out directly: every non-empty document + EOS, concatenated, cut."""
    ids = [t for d in documents if d for t in tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]
    return [ids[i:i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_run_of_empty_documents_longer_than_a_batch_is_not_the_end(tokenizer, batch_size):
    documents = ["one two three four five"] * 3 + [""] * 9 + ["six seven eight nine ten"] * 3
    expected = flat_blocks(tokenizer, documents, 4)
    every = list(iter_blocks(tokenizer, documents, 4, batch_size=batch_size))
    assert [b for b, _ in every] == expected and len(expected) >= 6
    for k, (_, position) in enumerate(every):
        rest = [b for b, _ in iter_blocks(tokenizer, documents, 4, start=position, batch_size=batch_size)]
        assert rest == expected[k + 1:], (k, position)


def test_empty_json_shard_in_a_folder_holds_no_documents(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"text": "x"}]))
    (tmp_path / "b.json").write_text("  \n")
    assert list(stream_documents(str(tmp_path))) == load_documents(str(tmp_path)).documents == ["x"]


def test_named_line_readers_split_lines_like_read_text(layout_dir):
    raw = "a\rb\n c\x0bd \n\u2028e\r\n"
    (layout_dir / "wikitext-2-raw" / "wiki.test.raw").write_bytes(raw.encode("utf-8"))
    expected = ["" if not x.strip() else x for x in (layout_dir / "wikitext-2-raw" / "wiki.test.raw").read_text(
        encoding="utf-8").splitlines(keepends=True)]
    assert list(stream_documents("wikitext2:test", data_dir=layout_dir)) == expected
    assert load_documents("wikitext2:test", data_dir=layout_dir).documents == expected


def test_corrupt_gzip_is_a_data_error(tmp_path):
    good = gzip.compress(b'{"text": "hello"}\n' * 2000)
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(good[:40] + bytes(b ^ 0xFF for b in good[40:80]) + good[80:])
    with pytest.raises(DataError, match="cannot read .*bad.jsonl.gz"):
        list(stream_documents(str(path)))


def _fake_hub(monkeypatch, rows):
    import datasets

    calls = []

    def fake_load_dataset(path, config=None, split=None, streaming=False, **kwargs):
        calls.append((path, config, split, streaming))
        if streaming:
            return iter(rows)
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


def test_any_hub_dataset_by_spec(monkeypatch, layout_dir):
    rows = [{"content": f"page {i}"} for i in range(5)]
    calls = _fake_hub(monkeypatch, rows)
    spec = "hf:HuggingFaceFW/fineweb-edu/sample-10BT:train"
    corpus = load_documents(spec, data_dir=layout_dir, text_field="content")  # a data dir does not apply
    stream = stream_documents(spec, text_field="content")
    assert corpus.documents == list(stream) == [r["content"] for r in rows]
    assert corpus.source == stream.source == "hf:HuggingFaceFW/fineweb-edu/sample-10BT"
    assert calls == [("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", False),
                     ("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", True)]
    assert stream_documents("hf:a/b", "validation").split == "validation"
    assert stream_documents("hf:a/b").split == "train"
    assert stream_documents("hf:a/b:dev").split == "validation"
    assert stream.fingerprint() != stream_documents("hf:HuggingFaceFW/fineweb-edu:train").fingerprint()


def test_hub_spec_failure_hint_does_not_point_at_the_data_dir(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_documents("hf:a/b")
    assert "download the dataset's files" in info.value.hint and "SHORTLLM_DATA_DIR" not in info.value.hint


@pytest.mark.parametrize("spec", ["hf:", "hf:a/b/c/d", "hf:a//b", "hf:a/b:"])
def test_malformed_hub_spec(spec):
    with pytest.raises(DataError, match="cannot read the hub dataset spec"):
        stream_documents(spec)


def test_hub_dataset_without_the_text_field(monkeypatch):
    _fake_hub(monkeypatch, [{"content": "x"}])
    with pytest.raises(DataError, match="has no 'text' field"):
        load_documents("hf:a/b")
