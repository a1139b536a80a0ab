"""How to load a model: the load options (``LoadSettings``), their spelling checks (no torch) and the device and
dtype they resolve to. The library defaults that change what is computed are set where weights load
(``models/strict.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shortllm.errors import DeviceError

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class LoadSettings:
    """How to load a model; built by the CLI from the shared options."""

    dtype: str = "auto"
    device: str = "auto"
    device_map: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    # transformers' Hub kernels (``use_kernels``); off unless asked: see :func:`from_pretrained_strict`.
    kernels: bool = False


def check_names(settings: LoadSettings) -> None:
    """The spelling of ``--dtype`` and ``--device`` (not whether the device exists here) and whether ``--kernels``
    can be honoured, without torch: for the checks that run before anything heavy.

    Raises:
        DeviceError: an unknown name, listing the known ones; ``--kernels`` that cannot be honoured.
    """
    if settings.dtype not in DTYPES:
        raise DeviceError(f"unknown dtype '{settings.dtype}'", f"use one of {', '.join(DTYPES)}")
    if settings.device.split(":")[0] not in DEVICES:
        raise DeviceError(f"unknown device '{settings.device}'", f"use one of {', '.join(DEVICES)}")
    if settings.kernels:
        check_kernels()


def check_kernels() -> None:
    """Check that ``--kernels`` can be honoured: the ``kernels`` package is installed and the environment does not
    switch Hub kernels off (transformers would then drop the request with a warning only).

    Raises:
        DeviceError: naming the missing package or the environment variable.
    """
    import importlib.util
    import os

    value = os.environ.get("USE_HUB_KERNELS", "YES")  # transformers' default and its reading of the variable
    if value.strip().lower() not in ("true", "1", "y", "yes", "on"):
        raise DeviceError(f"--kernels was given but USE_HUB_KERNELS={value} switches Hub kernels off",
                          "unset USE_HUB_KERNELS, or leave out --kernels")
    if importlib.util.find_spec("kernels") is None:
        raise DeviceError("--kernels needs the 'kernels' package, which is not installed",
                          "install it (pip install kernels), or leave out --kernels")


def check_settings(settings: LoadSettings) -> str:
    """Validate dtype, device and the kernels choice before any slow work; returns the resolved device."""
    check_names(settings)
    return resolve_device(settings.device)


def resolve_device(device: str) -> str:
    """Turn ``auto|cpu|cuda|mps`` (or ``cuda:N``) into a concrete available device.

    Raises:
        DeviceError: unknown device or not available on this machine.
    """
    import torch

    check_names(LoadSettings(device=device))
    base = device.split(":")[0]
    if base == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but CUDA is not available here", "use --device cpu")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps was asked for but MPS is not available here", "use --device cpu")
    return device


def resolve_dtype(dtype: str) -> Any:
    """``auto`` (the checkpoint's own dtype) or a torch dtype for ``float32|bfloat16|float16``.

    Raises:
        DeviceError: for an unknown dtype name.
    """
    import torch

    check_names(LoadSettings(dtype=dtype))
    return "auto" if dtype == "auto" else getattr(torch, dtype)
