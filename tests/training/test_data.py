"""Training rows: Alpaca records with the prompt masked, packing, the held-out split, the batch order."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from shortllm.errors import DataError
from shortllm.training.config import DataOptions
from shortllm.training.data.batches import BatchOrder, collate, plan_steps
from shortllm.training.data.rows import (
    IGNORE,
    format_prompt,
    instruction_rows,
    load_train_data,
    read_instructions,
)


@pytest.fixture(scope="module")
def tok(tiny_bpe_dir):
    return AutoTokenizer.from_pretrained(tiny_bpe_dir)


def test_read_instructions_names_the_line_without_a_field(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n\n" + json.dumps({"instruction": "c"}) + "\n")
    with pytest.raises(DataError, match=r"a\.jsonl:3 has no 'output' field"):
        read_instructions(path)


def test_read_instructions_names_the_item_of_a_json_list(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"input": "x", "output": "y"}]))
    with pytest.raises(DataError, match=r"item 1 has no 'instruction' field"):
        read_instructions(path)


def test_prompt_tokens_are_masked_and_the_answer_ends_with_eos(tok):
    record = {"instruction": "Say hi.", "input": "", "output": "Hi there."}
    rows, dropped = instruction_rows(tok, [record], seq_len=256)
    assert dropped == 0
    ids, labels = rows.input_ids[0].tolist(), rows.labels[0].tolist()
    n_prompt = len(tok(format_prompt(record), add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == "Hi there."
    assert rows.targets[0] == len(ids) - n_prompt


def test_records_cut_off_before_the_answer_are_dropped(tok):
    short = {"instruction": "a", "input": "", "output": "b"}
    fits = len(tok(format_prompt(short), add_special_tokens=False)["input_ids"]) + 2
    record = {"instruction": "word " * 100, "input": "", "output": "x"}
    rows, dropped = instruction_rows(tok, [record, short], seq_len=fits)
    assert (len(rows), dropped) == (1, 1)


def test_auto_format_detects_alpaca_and_holds_out_the_tail(tok, tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"instruction": f"Count to {i}.", "input": "", "output": " ".join(map(str, range(i)))}
                                for i in range(1, 21)]))
    data = load_train_data(tok, DataOptions(data=str(path), eval_fraction=0.1), seq_len=256)
    assert data.kind == "instruction"
    assert (len(data.train), len(data.eval)) == (18, 2)
    assert data.eval.input_ids[-1].tolist() == instruction_rows(tok, read_instructions(path), 256)[0].input_ids[-1].tolist()


def test_plain_text_is_packed(tok, small_text):
    data = load_train_data(tok, DataOptions(data=str(small_text), max_eval_rows=3), seq_len=32)
    assert data.kind == "text" and len(data.eval) == 3
    assert all(len(x) == 32 for x in data.train.input_ids)
    assert data.train.targets[0] == 31
    assert tok.eos_token_id in {t for x in data.train.input_ids for t in x.tolist()}


def test_too_little_text_is_a_data_error(tok, tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("Just a few words.")
    with pytest.raises(DataError, match="less than one block of 64"):
        load_train_data(tok, DataOptions(data=str(path)), seq_len=64)


@pytest.mark.parametrize("world,accum", [(2, 1), (4, 1), (2, 2)])
def test_the_global_batch_is_the_same_for_any_number_of_processes(world, accum):
    one = BatchOrder(50, seed=3, micro_batch=2, grad_accum=world * accum, world_size=1)
    many = BatchOrder(50, seed=3, micro_batch=2, grad_accum=accum, world_size=world)
    for step in range(30):  # crosses several epochs
        single = [i for m in range(world * accum) for i in one.micro_rows(step, m, 0)]
        shards = [many.micro_rows(step, m, r) for m in range(accum) for r in range(world)]
        # Same rows in the same micro-batch groups: every slot of the global batch goes to exactly one
        # process (no overlap between shards, nothing left out).
        assert [i for s in shards for i in s] == single


def test_every_row_is_seen_once_per_epoch():
    order = BatchOrder(12, seed=0, micro_batch=2, grad_accum=1, world_size=2)
    seen = [i for s in range(3) for i in order.step_rows(s)]
    assert sorted(seen) == list(range(12))


def test_collate_pads_right_with_ignored_labels(tok):
    rows, _ = instruction_rows(tok, [{"instruction": "a", "output": "b"}, {"instruction": "a b c d", "output": "e f"}],
                               seq_len=128)
    batch = collate(rows, [0, 1], pad_id=0)
    short = len(rows.input_ids[0])
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0, short:] == IGNORE).all()


def test_plan_steps():
    assert plan_steps(100, 4, 32, max_steps=7, max_tokens=None) == 7
    assert plan_steps(100, 4, 32, max_steps=None, max_tokens=1000) == 8  # ceil(1000 / 128)
    assert plan_steps(100, 4, 32, max_steps=None, max_tokens=None) == 25
