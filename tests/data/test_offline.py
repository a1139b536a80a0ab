"""The offline switch: when the hub is unreachable, the libraries run in their own offline mode, for the call only."""

from __future__ import annotations

import socket

import pytest

from shortllm.data import load_documents, offline
from shortllm.errors import DataError

REAL_PROBE = offline._answers  # taken at import, before any fixture replaces it


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("SHORTLLM_DATA_DIR", "HF_ENDPOINT", *offline.OFFLINE_ENV, *offline.PROXY_ENV):
        monkeypatch.delenv(name, raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    offline.forget_reachability()
    yield
    offline.forget_reachability()


def _probe_must_not_run(host, port):
    raise AssertionError("the network was asked")


def test_offline_env_means_unreachable_without_asking(clean_env, monkeypatch):
    monkeypatch.setattr(offline, "_answers", _probe_must_not_run)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert offline.hub_reachable() is False


def test_a_proxy_is_left_to_the_libraries(clean_env, monkeypatch):
    monkeypatch.setattr(offline, "_answers", _probe_must_not_run)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert offline.hub_reachable() is True


def test_the_network_is_asked_once_at_the_endpoint(clean_env, monkeypatch):
    asked = []

    def refuse(address, timeout=None):
        asked.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(offline, "_answers", REAL_PROBE)  # the data conftest pins a stand-in
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example:8443")
    assert offline.hub_reachable() is False and offline.hub_reachable() is False
    assert asked == [(("hub.example", 8443), offline.PROBE_TIMEOUT_S)]


def test_hub_access_switches_the_libraries_for_the_call_only(clean_env, monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(offline, "_answers", lambda host, port: False)
    with offline.hub_access() as reachable:
        assert reachable is False
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True and datasets.config.HF_HUB_OFFLINE is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False and datasets.config.HF_HUB_OFFLINE is False
    monkeypatch.setattr(offline, "_answers", lambda host, port: True)
    offline.forget_reachability()  # the answer is kept per process
    with offline.hub_access() as reachable:
        assert reachable is True and datasets.config.HF_HUB_OFFLINE is False


def test_a_hub_dataset_loads_in_offline_mode_when_the_hub_is_unreachable(clean_env, monkeypatch):
    """A cached copy is used at once; a missing one fails at once with the one-line error."""
    import datasets

    seen = []

    def cached_only(path, name=None, split=None, streaming=False, **kwargs):
        seen.append(datasets.config.HF_HUB_OFFLINE)
        if path == "a/cached":
            return datasets.Dataset.from_list([{"text": "from the cache"}])
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", cached_only)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(offline, "_answers", lambda host, port: False)
    assert load_documents("hf:a/cached").documents == ["from the cache"]
    with pytest.raises(DataError) as err:
        load_documents("wikitext2")
    assert seen == [True, True] and datasets.config.HF_HUB_OFFLINE is False
    assert err.value.one_line() == (
        "cannot load wikitext2 (hf:wikitext/wikitext-2-raw-v1, test): the Hugging Face hub cannot be reached "
        "(offline) and the datasets cache holds no copy. Pass --data-dir (or set SHORTLLM_DATA_DIR) with a local "
        "copy (layout in docs/data.md), or run once online so that the datasets cache holds it.")


def test_other_hub_failures_keep_their_own_message(clean_env, monkeypatch):
    import datasets

    def gated(*args, **kwargs):
        raise PermissionError("Dataset 'a/b' is a gated dataset on the Hub.")

    monkeypatch.setattr(datasets, "load_dataset", gated)
    with pytest.raises(DataError) as err:
        load_documents("hf:a/b")
    assert err.value.message == ("cannot load a/b (hf:a/b, train) from the Hugging Face hub: "
                                 "Dataset 'a/b' is a gated dataset on the Hub.")


class ConnectError(Exception):
    """Named like httpx's: the HTTP stacks' own classes are recognised by name."""


@pytest.mark.parametrize("make, network", [
    (lambda: ConnectionError("Couldn't reach 'x' on the Hub"), True),
    (lambda: ConnectError("[Errno -2] Name or service not known"), True),
    (lambda: socket.gaierror(-2, "Name or service not known"), True),
    (lambda: TimeoutError("timed out"), True),
    (lambda: FileNotFoundError("no such file"), False),
    (lambda: KeyError("text"), False),
    (lambda: ValueError("bad config"), False),
])
def test_is_network_error(make, network):
    assert offline.is_network_error(make()) is network
    try:  # and when wrapped by a library that raises its own error from it
        try:
            raise make()
        except Exception as inner:
            raise RuntimeError("could not build the task") from inner
    except RuntimeError as outer:
        assert offline.is_network_error(outer) is network
