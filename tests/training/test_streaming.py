"""--streaming: batches come from the text in order, epochs wrap, and a resumed run continues exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from shortllm.data import iter_blocks, load_documents
from shortllm.training import retrain
from shortllm.training.config import DataOptions
from shortllm.training.data.batches import StreamBatches, make_batches
from shortllm.training.data.rows import load_train_data
from tests.training.helpers import quick_config


def streaming(cfg):
    return replace(cfg, data=replace(cfg.data, streaming=True))


def served(data, steps, seed=0, window=1, global_batch=4):
    data.train.shuffle_window = window
    batches = make_batches(data, seed=seed, micro_batch=global_batch, grad_accum=1, world_size=1)
    return [r.tolist() for s in range(steps) for r in batches.step(s).input_ids], batches


@pytest.fixture(scope="module")
def short_text(tmp_path_factory) -> Path:
    """About 20 blocks of 32 tokens of the tiny BPE tokenizer: a few steps make an epoch."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("short") / "short.txt"
    path.write_text("\n\n".join(topics[k][:500] for k in sorted(topics)[:4]))
    return path


def test_batches_follow_the_text_after_the_held_out_head(tiny_bpe_dir, short_text):
    tok = AutoTokenizer.from_pretrained(tiny_bpe_dir)
    data = load_train_data(tok, DataOptions(data=str(short_text), max_eval_rows=3, streaming=True), seq_len=32)
    blocks = [b for b, _ in iter_blocks(tok, load_documents(str(short_text)).documents, 32)]
    assert data.streaming and [r.tolist() for r in data.eval.input_ids] == blocks[:3]
    batches = make_batches(data, seed=0, micro_batch=2, grad_accum=1, world_size=2)
    assert isinstance(batches, StreamBatches)
    train = blocks[3:]
    steps_per_epoch = len(train) // 4
    served = [[r.tolist() for r in batches.step(s).input_ids] for s in range(steps_per_epoch + 2)]
    flat = [b for step in served for b in step]
    assert flat[:len(train)] == train  # epoch 0: every training block once, in order
    assert flat[len(train):len(train) + 4] == train[:4]  # epoch 1 starts over after the held-out head
    assert batches.position()["epoch"] == 1


@pytest.mark.parametrize("window", [1, 5])
def test_streamed_run_resumes_exactly_across_an_epoch_boundary(pruned_tiny, short_text, tmp_path, window):
    base = streaming(quick_config("cpt", pruned_tiny, short_text, tmp_path / "a", max_steps=12, lr=1e-3,
                                  save_every=3))
    base = replace(base, data=replace(base.data, shuffle_window=window))
    whole = retrain(base)
    split = replace(base, out=tmp_path / "b")
    first = retrain(replace(split, stop_after=7))
    state = json.loads((Path(first.checkpoint) / "trainer_state.json").read_text())
    assert state["data_position"]["step"] == 7 and state["data_position"]["epoch"] == 0
    resumed = retrain(replace(split, resume=True))
    assert resumed.finished and resumed.resumed_from.endswith("step-0000007")
    for a, b in zip(whole.loss_curve, resumed.loss_curve, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-6 and a["tokens"] == b["tokens"]
    assert abs(whole.final_eval_loss - resumed.final_eval_loss) < 1e-6


def test_resume_refuses_a_checkpoint_without_a_stream_position(pruned_tiny, short_text, tmp_path):
    from shortllm.errors import TrainingError

    cfg = streaming(quick_config("cpt", pruned_tiny, short_text, tmp_path / "o", max_steps=4))
    first = retrain(replace(cfg, stop_after=2))
    state_file = Path(first.checkpoint) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "data_position": {}}))
    with pytest.raises(TrainingError, match="has no stream position"):
        retrain(replace(cfg, resume=True))
    assert not (tmp_path / "o").exists()


def test_eval_data_is_held_out_instead_of_the_head(tiny_bpe_dir, short_text, small_text):
    tok = AutoTokenizer.from_pretrained(tiny_bpe_dir)
    opts = DataOptions(data=str(short_text), eval_data=str(small_text), max_eval_rows=4, eval_fraction=0,
                       streaming=True)
    data = load_train_data(tok, opts, seq_len=32)
    eval_blocks = [b for b, _ in iter_blocks(tok, load_documents(str(small_text)).documents, 32)]
    assert [r.tolist() for r in data.eval.input_ids] == eval_blocks[:4]
    train_blocks = [b for b, _ in iter_blocks(tok, load_documents(str(short_text)).documents, 32)]
    first = make_batches(data, seed=0, micro_batch=2, grad_accum=1, world_size=1).step(0)
    assert [r.tolist() for r in first.input_ids] == train_blocks[:2]  # nothing of the training text held out
    assert data.info["eval"]["source"] == str(small_text) and data.info["eval"]["rows"] == 4


def test_shuffle_window_permutes_each_window_and_resumes_mid_window(tiny_bpe_dir, short_text):
    tok = AutoTokenizer.from_pretrained(tiny_bpe_dir)
    data = load_train_data(tok, DataOptions(data=str(short_text), max_eval_rows=3, streaming=True), seq_len=32)
    in_order, _ = served(data, 6)
    shuffled, batches = served(data, 6, window=7)
    assert shuffled != in_order
    for w in range(0, 21, 7):  # each window of 7 blocks is served whole before the next is read
        assert sorted(shuffled[w:w + 7]) == sorted(in_order[w:w + 7])
    assert served(data, 6, window=7)[0] == shuffled
    assert served(data, 6, window=7, seed=1)[0] != shuffled
    position = batches.position()
    assert 0 < position["index"] < 7  # 24 blocks served: inside the fourth window
    resumed = make_batches(data, seed=0, micro_batch=4, grad_accum=1, world_size=1)
    resumed.seek(6, position)
    more = [r.tolist() for s in range(6, 9) for r in resumed.step(s).input_ids]
    assert served(data, 9, window=7)[0][24:] == more
