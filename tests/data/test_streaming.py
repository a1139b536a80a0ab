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
    with pytest.raises(DataError, match=r"cannot load c4 .* \(offline\?\): Couldn't reach the hub"):
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
