"""Calls into libraries that may reach the network: a fast offline switch and the test for a network failure.

Without a network, the hub libraries (``datasets``, lm-eval's task downloads, ``transformers``) retry every request
with backoff -- about 25 s and a dozen warnings on stderr per call -- and then fail with a long traceback. shortllm
makes every such call inside :func:`hub_access`: it asks once per process whether the hub answers at all (one TCP
connection with a short timeout) and, when it does not, switches the libraries to their own offline mode for the
call, so that a cached copy is used at once and a missing one fails at once. The caller then raises its one-line
error naming the fix (``--data-dir``, or a run online that fills the cache), using :func:`is_network_error` to tell
a network failure from any other.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# Behind a proxy a direct connection says nothing about the hub: the libraries are left to find out themselves.
PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")
# The offline switches the libraries read at call time (both are set from the environment at import).
OFFLINE_FLAGS = (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                 ("datasets.config", "HF_DATASETS_OFFLINE"))
# Exception classes of the HTTP stacks (httpx, requests, urllib3, huggingface_hub) that mean "no network".
NETWORK_ERRORS = {"ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError", "ConnectTimeout", "ReadTimeout",
                  "NetworkError", "TimeoutException", "ProxyError", "NewConnectionError", "MaxRetryError",
                  "NameResolutionError"}


def _true(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline_requested() -> bool:
    """Whether the user put the hub libraries in offline mode (``HF_HUB_OFFLINE=1`` and friends)."""
    if any(_true(os.environ.get(name)) for name in OFFLINE_ENV):
        return True
    try:
        constants = importlib.import_module("huggingface_hub.constants")
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


_answered: dict[tuple[str, int], bool] = {}  # the network's answer, asked once per process and endpoint


def _answers(host: str, port: int) -> bool:
    """Whether a TCP connection to ``host:port`` opens within :data:`PROBE_TIMEOUT_S`."""
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        log.info("the Hugging Face hub (%s:%d) cannot be reached (%s): using cached copies only", host, port, err)
        return False
    return True


def hub_reachable() -> bool:
    """Whether calls to the Hugging Face hub can succeed: False in offline mode or when the hub does not answer.

    The network is asked once per process and endpoint (``$HF_ENDPOINT``; see :func:`forget_reachability`);
    behind a proxy it is not asked (True).
    """
    if offline_requested():
        return False
    if any(os.environ.get(name) for name in PROXY_ENV):
        return True
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    if not endpoint.hostname:
        return True
    key = (endpoint.hostname, endpoint.port or (80 if endpoint.scheme == "http" else 443))
    if key not in _answered:
        _answered[key] = _answers(*key)
    return _answered[key]


def forget_reachability() -> None:
    """Ask the network again at the next :func:`hub_reachable` (a long-lived process whose network came back)."""
    _answered.clear()


@contextlib.contextmanager
def hub_access() -> Iterator[bool]:
    """Run hub library calls in their offline mode when the hub cannot be reached; yields whether it can.

    Offline, ``datasets`` and ``huggingface_hub`` read their caches only and fail at once when a file is absent,
    instead of retrying for half a minute. The flags are restored on exit.
    """
    reachable = hub_reachable()
    saved = []
    if not reachable:
        for module_name, attr in OFFLINE_FLAGS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            saved.append((module, attr, getattr(module, attr, None)))
            setattr(module, attr, True)
    try:
        yield reachable
    finally:
        for module, attr, value in reversed(saved):
            setattr(module, attr, value)


def is_network_error(err: BaseException | None) -> bool:
    """Whether ``err``, or an exception it was raised from, says the network or the hub could not be reached."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if any(cls.__name__ in NETWORK_ERRORS for cls in type(err).__mro__):
            return True
        err = err.__cause__ or err.__context__
    return False


__all__ = ["forget_reachability", "hub_access", "hub_reachable", "is_network_error", "offline_requested"]
