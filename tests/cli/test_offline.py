"""No network: every verb whose data would come from the hub ends in one line naming the fix, quickly.

The network is made unreachable in-process (every connection and name lookup fails; the caches are empty), so
these tests mean the same on a machine that has a network. Without shortllm's offline switch the hub libraries
would retry each request for about 25 s and end in a traceback of some 95 lines.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import run_cli
from tests.training.helpers import make_tiny_model_with_tokenizer

OFFLINE = "the Hugging Face hub cannot be reached (offline)"


def _no_route(*args, **kwargs):
    raise OSError(101, "Network is unreachable (test)")


def _no_name(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known (test)")


def go_offline(monkeypatch, tmp_path: Path, how: str) -> list:
    """No network (connections and name lookups fail), or also the libraries' own offline mode; empty caches.

    Returns the (module, flag) pairs of the libraries' offline switches.
    """
    import datasets
    import huggingface_hub.constants

    from shortllm.data import offline as switch

    for name in ("SHORTLLM_DATA_DIR", "HF_ENDPOINT", *switch.OFFLINE_ENV, *switch.PROXY_ENV):
        monkeypatch.delenv(name, raising=False)
    flags = [(huggingface_hub.constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
             (datasets.config, "HF_DATASETS_OFFLINE")]
    for module, attr in flags:  # both libraries read the environment once, at import
        monkeypatch.setattr(module, attr, how != "no network")
    if how == "HF_HUB_OFFLINE=1":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", _no_route)
    monkeypatch.setattr(socket, "getaddrinfo", _no_name)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    switch.forget_reachability()
    return flags


@pytest.fixture(params=["no network", "HF_HUB_OFFLINE=1"])
def offline(request, monkeypatch, tmp_path):
    """Each test twice: with no network at all, and with the libraries' offline mode set by the user."""
    from shortllm.data.offline import forget_reachability

    flags = go_offline(monkeypatch, tmp_path, request.param)
    yield request.param
    forget_reachability()
    for module, attr in flags:  # the switch gave the libraries their flags back
        assert getattr(module, attr) == (request.param != "no network")


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory) -> Path:
    """A tiny 4-block llama with a small BPE tokenizer of its own."""
    return make_tiny_model_with_tokenizer(tmp_path_factory.mktemp("offline-llama") / "tiny")


def assert_offline_error(result, *needles):
    assert_one_line_error(result, OFFLINE, "--data-dir", *needles)


@pytest.mark.parametrize("data", ["wikitext2", "ptb:train", "c4"])
def test_score_named_dataset(offline, tok_model, tmp_path, data):
    t0 = time.perf_counter()
    result = run_cli("score", "-m", tok_model, "--data", data, "--out", tmp_path / "o", "--device", "cpu")
    assert_offline_error(result, f"cannot load {data.split(':')[0]} (hf:", "local copy")
    assert time.perf_counter() - t0 < 20  # no retries with backoff
    assert not (tmp_path / "o").exists()


def test_score_any_hub_dataset(offline, tok_model, tmp_path):
    result = run_cli("score", "-m", tok_model, "--data", "hf:someone/something", "--out", tmp_path / "o",
                     "--device", "cpu")
    assert_offline_error(result, "cannot load someone/something (hf:someone/something, train)",
                         "pass their folder instead of the hf: spec")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("streaming", [[], ["--streaming"]])
def test_retrain_named_dataset(offline, tok_model, tmp_path, streaming):
    result = run_cli("retrain", "-M", "cpt", "-m", tok_model, "--data", "c4", *streaming, "--max-steps", "1",
                     "--seq-len", "32", "--device", "cpu", "--out", tmp_path / "o")
    assert_offline_error(result, "cannot load c4 (hf:allenai/c4, train)")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_eval_perplexity_dataset(offline, tok_model, tmp_path):
    result = run_cli("eval", "-m", tok_model, "--ppl", "wikitext2", "--tasks", "none", "--device", "cpu",
                     "--out", tmp_path / "o")
    assert_offline_error(result, "cannot load wikitext2 (hf:wikitext/wikitext-2-raw-v1, test)")
    assert not (tmp_path / "o").exists()


def test_eval_lm_eval_task(monkeypatch, tok_model, tmp_path):
    """No network only (building lm-eval's task index is slow; the offline mode is the same switch)."""
    from shortllm.data.offline import forget_reachability

    go_offline(monkeypatch, tmp_path, "no network")
    result = run_cli("eval", "-m", tok_model, "--ppl", "none", "--tasks", "piqa", "--device", "cpu",
                     "--out", tmp_path / "o")
    forget_reachability()
    assert_offline_error(result, "cannot load the data of the lm-eval task piqa", "layout in docs/eval.md")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("verb", [["eval", "--tasks", "none", "--ppl", "pydoc", "--device", "cpu"], ["inspect"],
                                  ["prune", "--blocks", "1", "--dry-run"]])
def test_hub_model_id(offline, verb, tmp_path):
    import time

    t0 = time.perf_counter()
    result = run_cli(verb[0], "-m", "someone/no-such-model", *verb[1:])
    assert_one_line_error(result, "cannot load 'someone/no-such-model' from the Hugging Face hub",
                          "(offline?)")
    # The hub libraries' offline mode answers at once: no retries with backoff (about 30 s before).
    assert time.perf_counter() - t0 < 15
