"""Model specs -> loaded models and tokenizers.

A spec (``--model/-m``) is a Hugging Face hub id, a local directory in HF format, a ``.gguf`` file
(dequantized once into a cached safetensors directory), or the built-in alias ``smollm2-135m`` (the
default). Loading never runs remote code unless asked and never unpickles weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortllm.errors import DeviceError, ModelLoadError
from shortllm.models import demo

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: what to hand to ``from_pretrained``."""

    spec: str  # as the user gave it
    kind: str  # "alias" | "dir" | "gguf" | "hub"
    path: str  # local directory or hub id
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"


@dataclass
class Loaded:
    """A loaded model with its tokenizer (None if the source has none) and provenance."""

    model: Any
    tokenizer: Any
    source: ModelSource
    fingerprint: str
    device: str


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", ".", "~"))
        or spec.endswith(("/", ".gguf", ".safetensors", ".json"))
        or "\\" in spec
        or spec.count("/") > 1
    )


def resolve_source(spec: str | None, revision: str | None = None) -> ModelSource:
    """Resolve a model spec without loading weights (converting an alias or .gguf once if needed).

    Raises:
        ModelLoadError: for a missing path, a directory without config.json, a non-model file.
    """
    if spec is None or spec == demo.DEMO_ALIAS:
        return ModelSource(demo.DEMO_ALIAS, "alias", str(demo.demo_model_dir()))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"no such GGUF file: {spec}", "check the path")
        return ModelSource(spec, "gguf", str(_converted_gguf(path)))
    if path.exists():
        if path.is_file():
            raise ModelLoadError(
                f"{spec} is a file, not a model", "pass a model directory (with config.json), a .gguf, or a hub id"
            )
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"directory {spec} has no config.json, so it is not a Hugging Face model directory",
                "pass the folder that holds config.json and the weights",
            )
        return ModelSource(spec, "dir", str(path))
    if _looks_like_path(spec):
        raise ModelLoadError(f"no such file or directory: {spec}", "check the path")
    return ModelSource(spec, "hub", spec, revision)


def _converted_gguf(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    out = demo.cache_dir() / "models" / f"gguf-{path.stem}-{key}"
    if (out / "config.json").is_file():
        return out
    return demo.gguf_to_hf_dir(path, out)


def _hub_error(source: ModelSource, err: Exception) -> ModelLoadError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or "connect" in str(err).lower()
    return ModelLoadError(
        f"cannot load '{source.spec}' from the Hugging Face hub or its local cache"
        + (" (offline?)" if offline else "") + f": {first}",
        "check the model id, or pass a local directory or .gguf file with --model",
    )


def load_config(source: ModelSource, trust_remote_code: bool = False) -> Any:
    """Load the config of a resolved source.

    Raises:
        ModelLoadError: unreadable config, unknown model type, remote code needed but not allowed.
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            source.path, revision=source.revision, trust_remote_code=trust_remote_code
        )
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, JSONDecodeError...
        if "trust_remote_code" in str(err):
            raise ModelLoadError(
                f"'{source.spec}' needs custom code from its repository to load",
                "review that code, then pass --trust-remote-code",
            ) from err
        if source.kind == "hub":
            raise _hub_error(source, err) from err
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"cannot read the config of '{source.spec}': {first}", "check config.json") from err


def resolve_device(device: str) -> str:
    """Turn ``auto|cpu|cuda|mps`` (or ``cuda:N``) into a concrete available device.

    Raises:
        DeviceError: unknown device or not available on this machine.
    """
    import torch

    base = device.split(":")[0]
    if base not in DEVICES:
        raise DeviceError(f"unknown device '{device}'", f"use one of {', '.join(DEVICES)}")
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

    if dtype not in DTYPES:
        raise DeviceError(f"unknown dtype '{dtype}'", f"use one of {', '.join(DTYPES)}")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def fingerprint(source: ModelSource, config: Any) -> str:
    """A short, stable identity of a model: config plus weight file names and sizes (or hub commit)."""
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    if source.is_local:
        for f in sorted(Path(source.path).glob("*.safetensors")):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    else:
        h.update(f"{source.path}@{getattr(config, '_commit_hash', None) or source.revision}".encode())
    return h.hexdigest()[:16]


def check_settings(settings: LoadSettings) -> str:
    """Validate dtype and device before any slow work; returns the resolved device."""
    resolve_dtype(settings.dtype)
    return resolve_device(settings.device)


def load_model(spec: str | None, settings: LoadSettings = LoadSettings()) -> Loaded:
    """Load a model and tokenizer from a spec.

    Returns:
        :class:`Loaded`, with the model in eval mode on the resolved device (or spread by ``device_map``).

    Raises:
        ModelLoadError, DeviceError, UnsupportedArchitectureError: see the messages.
    """
    from transformers import AutoModelForCausalLM

    from shortllm.models.arch import blocks_of, check_decoder

    device = check_settings(settings)
    dtype = resolve_dtype(settings.dtype)
    source = resolve_source(spec, settings.revision)
    config = load_config(source, settings.trust_remote_code)
    check_decoder(config)
    kwargs: dict[str, Any] = {
        "revision": source.revision,
        "trust_remote_code": settings.trust_remote_code,
        "dtype": dtype,
        "use_safetensors": True,
    }
    if settings.device_map:
        kwargs["device_map"] = settings.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
    except Exception as err:
        if source.kind == "hub":
            raise _hub_error(source, err) from err
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "safetensors" in first.lower() and "no file named" in first.lower():
            raise ModelLoadError(
                f"'{source.spec}' has no safetensors weights (pickled .bin weights are not loaded)",
                "convert the checkpoint to safetensors",
            ) from err
        raise ModelLoadError(f"cannot load the weights of '{source.spec}': {first}", "check the files") from err
    if not settings.device_map:
        model.to(device)
    model.eval()
    blocks_of(model)  # fail early, with a named error, on layouts we cannot operate on
    return Loaded(model, load_tokenizer(source, settings.trust_remote_code), source,
                  fingerprint(source, config), device)


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a source, or None (with a warning) when it has none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            source.path, revision=source.revision, trust_remote_code=trust_remote_code
        )
    except Exception as err:  # a model without a tokenizer is still prunable
        log.warning("no tokenizer loaded for %s (%s)", source.spec, str(err).splitlines()[0] if str(err) else err)
        return None


def load_skeleton(spec: str | None, settings: LoadSettings = LoadSettings()) -> tuple[Any, ModelSource]:
    """Build the model on the meta device from its config alone (no weights): for parameter counts.

    Returns:
        (model on meta, resolved source).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from shortllm.models.arch import check_decoder

    source = resolve_source(spec, settings.revision)
    config = load_config(source, settings.trust_remote_code)
    check_decoder(config)
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=settings.trust_remote_code)
        except ValueError as err:
            raise ModelLoadError(
                f"'{source.spec}' (model type '{config.model_type}') is not a causal language model",
                "shortllm prunes decoder-only models such as llama, qwen2, gemma, mistral",
            ) from err
    return model, source
