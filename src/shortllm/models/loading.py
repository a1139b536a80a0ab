"""Model specs -> loaded models and tokenizers.

A spec (``--model/-m``) is a Hugging Face hub id, a local directory in HF format, a ``.gguf`` file
(dequantized once into a cached safetensors directory), or the built-in alias ``smollm2-135m`` (the
default). Loading never runs remote code unless asked and never unpickles weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortllm.errors import ModelLoadError, reason
from shortllm.models import demo
# the load options and the strict door, re-exported under the names callers have always imported from here
from shortllm.models.settings import (DEVICES, DTYPES, LoadSettings, check_kernels, check_names,  # noqa: F401
                                      check_settings, resolve_device, resolve_dtype)
from shortllm.models.strict import check_loading_info, from_pretrained_strict  # noqa: F401

log = logging.getLogger(__name__)

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

    @property
    def ref(self) -> str:
        """The name that finds this model again from any directory: an absolute path for a local folder or
        ``.gguf``, the alias, or the hub id."""
        if self.kind == "gguf":
            return str(Path(self.spec).expanduser().resolve())
        return self.spec if self.kind == "alias" else self.path

    @property
    def hub_id(self) -> str | None:
        """The Hugging Face hub id this model is known to be (the embedded model's original), else None."""
        if self.kind == "hub":
            return self.path
        return demo.DEMO_HUB_ID if self.kind == "alias" else None

    def record(self, config: Any = None) -> dict[str, Any]:
        """Provenance for a manifest: ``spec`` (the portable :attr:`ref`), what the user typed, the kind, the
        resolved path, the hub id and revision (the commit the hub served, when ``config`` carries it)."""
        revision = getattr(config, "_commit_hash", None) or self.revision
        return {"spec": self.ref, "given": self.spec, "kind": self.kind, "path": self.path,
                "hub_id": self.hub_id, "revision": revision if self.kind == "hub" else None}


@dataclass
class Loaded:
    """A loaded model with its tokenizer (None if the source has none) and provenance.

    ``processor``: for a multimodal checkpoint, its processor (image processor, tokenizer and chat template
    together) when the source has one, so that a pruned copy is saved with it; None otherwise.
    """

    model: Any
    tokenizer: Any
    source: ModelSource
    fingerprint: str
    device: str
    processor: Any = None


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
        return ModelSource(demo.DEMO_ALIAS, "alias", str(demo.demo_model_dir().resolve()))
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
        return ModelSource(spec, "dir", str(path.resolve()))
    if _looks_like_path(spec):
        raise ModelLoadError(f"no such file or directory: {spec}", "check the path")
    return ModelSource(spec, "hub", spec, revision)


def is_hub_id(spec: str | None) -> bool:
    """Whether ``resolve_source`` would read ``spec`` from the hub (not the alias, a .gguf, or a local path);
    nothing is resolved or converted."""
    if spec is None or spec == demo.DEMO_ALIAS:
        return False
    path = Path(spec).expanduser()
    return not (path.suffix == ".gguf" or path.exists() or _looks_like_path(spec))


def check_revision(specs: list[str | None], revision: str | None) -> None:
    """Refuse ``--revision`` when no model of the run comes from the hub (it would be ignored).

    Raises:
        ModelLoadError: naming the models.
    """
    if revision is not None and not any(is_hub_id(spec) for spec in specs):
        names = ", ".join(spec or demo.DEMO_ALIAS for spec in specs)
        raise ModelLoadError(f"--revision {revision} only applies to hub models, and {names} "
                             f"{'is' if len(specs) == 1 else 'are'} not", "drop --revision")


def model_paths(spec: str | None) -> list[Path]:
    """The local files a model spec reads, found without loading or converting anything, for output-overlap
    checks: the folder (and the targets of symlinked files in it, as in the hub cache layout), the ``.gguf``
    file and its cached conversion, the embedded model's cache folder, or a hub id's folder in the hub cache."""
    if spec is None or spec == demo.DEMO_ALIAS:
        return [demo.cache_dir() / "models" / demo.DEMO_ALIAS]
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return [path, _gguf_cache_path(path)]
    if path.is_dir():
        found = [path]
        found += sorted({f.resolve().parent for f in path.iterdir() if f.is_symlink()})
        return found
    if path.exists() or _looks_like_path(spec):
        return [path] if path.exists() else []
    from huggingface_hub import constants

    return [Path(constants.HF_HUB_CACHE) / ("models--" + spec.replace("/", "--"))]


def _gguf_cache_path(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return demo.cache_dir() / "models" / f"gguf-{path.stem}-{key}"


def _converted_gguf(path: Path) -> Path:
    out = _gguf_cache_path(path)
    if (out / "config.json").is_file():
        return out
    return demo.gguf_to_hf_dir(path, out)


def _hub_call(source: ModelSource) -> Any:
    """Around a ``from_pretrained`` of a hub id: the hub libraries' offline mode when the hub cannot be reached,
    so a cached copy loads at once and a missing one fails at once instead of retrying for half a minute."""
    import contextlib

    if source.kind != "hub":
        return contextlib.nullcontext()
    from shortllm.data.offline import hub_access

    return hub_access()


def _hub_error(source: ModelSource, err: Exception) -> ModelLoadError:
    from shortllm.data.offline import hub_reachable, is_network_error, offline_requested

    first = reason(err)
    offline = offline_requested() or is_network_error(err) or not hub_reachable()
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
        with _hub_call(source):
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
        first = reason(err)
        raise ModelLoadError(f"cannot read the config of '{source.spec}': {first}", "check config.json") from err


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


def load_model(spec: str | None, settings: LoadSettings = LoadSettings()) -> Loaded:
    """Load a model and tokenizer from a spec.

    Returns:
        :class:`Loaded`, with the model in eval mode on the resolved device (or spread by ``device_map``).

    Raises:
        ModelLoadError, DeviceError, UnsupportedArchitectureError: see the messages.
    """
    from shortllm.models.arch import auto_class, blocks_of, check_decoder, language_config

    device = check_settings(settings)
    dtype = resolve_dtype(settings.dtype)
    source = resolve_source(spec, settings.revision)
    config = load_config(source, settings.trust_remote_code)
    check_decoder(config)
    if dtype == "auto":
        dtype = auto_dtype(source, config)
    kwargs: dict[str, Any] = {
        "revision": source.revision,
        "trust_remote_code": settings.trust_remote_code,
        "dtype": dtype,
        "use_safetensors": True,
    }
    if settings.device_map:
        kwargs["device_map"] = settings.device_map
    log.info("Loading the model %s", source.spec, extra={"phase": True})  # a phase of the CLI's progress display
    try:
        with _hub_call(source):
            # A multimodal checkpoint loads whole, as its own class (vision tower included, untouched).
            model = from_pretrained_strict(source.path, source.spec, auto_class(config), kernels=settings.kernels,
                                           **kwargs)
    except ModelLoadError:
        raise
    except Exception as err:
        if source.kind == "hub":
            raise _hub_error(source, err) from err
        first = reason(err)
        if "safetensors" in first.lower() and "no file named" in first.lower():
            raise missing_weights(source) from err
        raise ModelLoadError(f"cannot load the weights of '{source.spec}': {first}", "check the files") from err
    if not settings.device_map:
        model.to(device)
    model.eval()
    blocks_of(model)  # fail early, with a named error, on layouts we cannot operate on
    processor = None
    if model.config is not language_config(model.config):
        check_text_path(model, source.spec)
        processor = load_processor(source, settings.trust_remote_code)
    return Loaded(model, load_tokenizer(source, settings.trust_remote_code), source,
                  fingerprint(source, config), device, processor)


def missing_weights(source: ModelSource) -> ModelLoadError:
    """The refusal of a folder without safetensors weights, saying what the folder does hold: pickled weights
    (``*.bin``, ``*.pt``, ``*.pth``: never loaded) or no weight files at all."""
    folder = Path(source.path)
    pickled = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in folder.glob(pattern))
    if pickled:
        return ModelLoadError(
            f"'{source.spec}' has only pickled weights ({', '.join(pickled[:3])}"
            f"{', ...' if len(pickled) > 3 else ''}), which shortllm never loads; it needs *.safetensors",
            "convert the checkpoint to safetensors (e.g. save_pretrained with safe_serialization=True)")
    present = sorted(p.name for p in folder.iterdir())
    return ModelLoadError(
        f"'{source.spec}' has no weight files: it holds {', '.join(present[:5])}{', ...' if len(present) > 5 else ''}"
        " but no model.safetensors (or model.safetensors.index.json and its shards)",
        "copy the weights into the folder, or pass the folder that has them")


def _hub_snapshot(source: ModelSource) -> Path | None:
    """The cached snapshot folder of a hub model (where its safetensors headers can be read), or None when it
    is not cached yet (``from_pretrained`` downloads it; transformers' ``auto`` then decides)."""
    try:
        from huggingface_hub import snapshot_download

        with _hub_call(source):
            return Path(snapshot_download(source.path, revision=source.revision, local_files_only=True,
                                          allow_patterns=["*.json"]))
    except Exception:  # noqa: BLE001 - not cached, or no hub access: nothing to read here
        return None


def auto_dtype(source: ModelSource, config: Any) -> Any:
    """``--dtype auto``: the dtype the weights are stored in, read from a local folder or a hub model's cached
    snapshot (transformers' ``auto`` takes the config's ``dtype`` field, which can disagree, and would round every
    weight on the in-memory path while the out-of-core path copies the bytes); a warning names a disagreement.
    ``"auto"`` where no stored weights can be read (a hub model not downloaded yet)."""
    import torch

    from shortllm.models.checkpoint import stored_dtype

    if source.is_local:
        stored = stored_dtype(Path(source.path))
    else:  # a hub model: its cached snapshot, when every weight file is there already
        folder = _hub_snapshot(source)
        try:
            stored = stored_dtype(folder) if folder is not None else None
        except ModelLoadError:  # shards not downloaded yet: transformers' auto decides, as on the first load
            stored = None
    if stored is None:
        return "auto"
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    declared = str(declared).replace("torch.", "") if declared is not None else None
    if declared not in (None, stored):
        log.warning("%s: config.json says dtype %s but the weights are stored in %s; --dtype auto keeps %s",
                    source.spec, declared, stored, stored)
    return getattr(torch, stored)


def check_text_path(model: Any, spec: str) -> None:
    """Check that a multimodal checkpoint's own class runs the text-only path that scoring, the reload check
    and evaluation use (token ids in, ``.logits`` out, no pixels): a 2-token forward.

    Raises:
        UnsupportedArchitectureError: naming the class, the installed transformers and its error (e.g.
            Llama4ForConditionalGeneration in transformers 5.24 reads ``image_outputs`` its language model's
            output lacks).
    """
    import torch
    import transformers

    from shortllm.errors import UnsupportedArchitectureError

    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.ones(1, 2, dtype=torch.long, device=device), use_cache=False).logits
    except Exception as err:  # noqa: BLE001 - any failure of the library's forward means the same to the user
        first = reason(err, 160)
        raise UnsupportedArchitectureError(
            f"'{spec}': {type(model).__name__} cannot run text-only in transformers "
            f"{transformers.__version__} ({type(err).__name__}: {first}), and scoring and the reload check "
            "need that path",
            "use a transformers version whose text-only forward works for this class",
        ) from err


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a source, or None (with a warning) when it has none."""
    from transformers import AutoTokenizer

    try:
        with _hub_call(source):
            return AutoTokenizer.from_pretrained(
                source.path, revision=source.revision, trust_remote_code=trust_remote_code
            )
    except Exception as err:  # a model without a tokenizer is still prunable
        log.warning("no tokenizer loaded for %s (%s)", source.spec, reason(err))
        return None


def load_processor(source: ModelSource, trust_remote_code: bool = False) -> Any:
    """The processor of a multimodal source (``AutoProcessor``: image processor, tokenizer, chat template),
    or None when it has none (scoring reads text with the tokenizer; the processor only travels to outputs)."""
    from transformers import AutoProcessor, ProcessorMixin

    try:
        with _hub_call(source):
            processor = AutoProcessor.from_pretrained(source.path, revision=source.revision,
                                                      trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - a checkpoint without a processor is still prunable
        log.info("no processor loaded for %s (%s)", source.spec, reason(err))
        return None
    return processor if isinstance(processor, ProcessorMixin) else None


def load_skeleton(spec: str | None, settings: LoadSettings = LoadSettings()) -> tuple[Any, ModelSource]:
    """Build the model on the meta device from its config alone (no weights): for parameter counts.

    Returns:
        (model on meta, resolved source).
    """
    source = resolve_source(spec, settings.revision)  # a bad path fails before the heavy imports below

    import torch

    from shortllm.models.arch import auto_class, check_decoder

    # A phase of the CLI's progress display; the first call also imports transformers' model code (seconds).
    log.info("Reading the model config of %s", source.spec, extra={"phase": True})
    config = load_config(source, settings.trust_remote_code)
    check_decoder(config)
    with torch.device("meta"):
        try:
            model = auto_class(config).from_config(config, trust_remote_code=settings.trust_remote_code)
        except ValueError as err:
            raise ModelLoadError(
                f"'{source.spec}' (model type '{config.model_type}') is not a causal language model",
                "shortllm prunes decoder-only models such as llama, qwen2, gemma, mistral",
            ) from err
    return model, source
