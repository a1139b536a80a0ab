"""Layer-by-layer scoring plumbing: one block's weights on the device at a time, streamed from safetensors.

The model is built on the meta device (buffers real, e.g. rotary frequencies), and only the parts outside
the blocks (embeddings, position embeddings, final norm, head) are loaded. A block is materialised from the
memory-mapped safetensors files just before it runs and sent back to ``meta`` right after, so peak memory is
one block + the calibration activations + the head, whatever the depth.

Blocks are called exactly as the model calls them: a *dry run* of the model's own forward, with every block
replaced by a recorder, captures each block's extra arguments (attention mask for its layer type, rotary
position embeddings, position ids, ...) and the embedded input of block 0; embedding scaling and learned
positions are applied by the model itself. The head runs through the model's own forward too, with every
block bypassed and the last one returning the hidden state (``capture.bypass``), so final norm, logit
scaling and soft-capping are the model's. The criteria's maths lives where the in-memory criteria keep it.

Memory: the activations of N calibration windows of T tokens at hidden size H are N*T*H values per stream.
Each block's tensors are copied out of the file's memory map and the file is closed again: a map kept open
leaves every page read so far counted in the process's resident memory (measured: 12.8 GiB peak RSS for a
7B bf16 model when the files stayed open, of which 0.35 GiB was the process's own memory).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shortllm.errors import DeviceError, ModelLoadError, UnsupportedArchitectureError
from shortllm.models.arch import blocks_of
from shortllm.models.checkpoint import FLOAT_DTYPES
from shortllm.scoring.capture import _as_output, _hidden_arg, bypass, patched_forwards

log = logging.getLogger(__name__)

# Families whose layer-by-layer scores are tested equal to the in-memory ones (tests/scoring/test_sweep.py).
OFFLOAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3",
                           "olmo2", "granite", "gpt2", "gpt_neox", "opt"})
LAYERWISE_CRITERIA = ("bi", "angular", "magnitude", "chop", "ppl", "sleb", "taylor", "taylor+")
HEADROOM = 1.2  # the in-memory path needs the weights plus activations, buffers and allocator slack
HEADROOM_BYTES = 1 << 30


class _Stop(Exception):
    """Ends a dry run once the blocks of interest have been reached (no head, no logits)."""


@dataclass
class BlockCall:
    """How the model calls one block: the positional arguments after the hidden state, and the keywords."""

    args: tuple
    kwargs: dict


def check_offload_type(config: Any) -> None:
    """Refuse a family whose layer-by-layer path is not verified.

    Raises:
        UnsupportedArchitectureError: naming the family and the supported ones, with the ``--no-offload`` fix.
    """
    model_type = getattr(config, "model_type", "?")
    if model_type not in OFFLOAD_TYPES:
        raise UnsupportedArchitectureError(
            f"layer-by-layer scoring does not support model type '{model_type}' yet "
            f"(supported: {', '.join(sorted(OFFLOAD_TYPES))})",
            "pass --no-offload to score it in memory",
        )


def weight_files(source: Any) -> list[Path]:
    """The safetensors files of a resolved model source (a hub id is fetched into the hub cache, as loading does).

    Raises:
        ModelLoadError: when the model has no safetensors weights.
    """
    folder = Path(source.path)
    if source.kind == "hub":
        from huggingface_hub import snapshot_download

        from shortllm.models.loading import _hub_call

        with _hub_call(source):
            folder = Path(snapshot_download(source.path, revision=source.revision,
                                            allow_patterns=["*.safetensors", "*.json"]))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"'{source.spec}' has no safetensors weights to stream block by block",
                             "convert the checkpoint to safetensors, or pass --no-offload")
    return files


class WeightStream:
    """The model skeleton plus a reader that materialises one block's parameters at a time.

    Attributes:
        model: the ``*ForCausalLM`` module; non-block parameters on ``device``, block parameters on ``meta``
            except inside :meth:`block`.
        device: where the working block, the embeddings, the head and the activations live.
    """

    def __init__(self, model: Any, files: Sequence[Path], device: str):
        from safetensors import safe_open

        self.model, self.device = model, torch.device(device)
        self.blocks = blocks_of(model)
        params = dict(model.named_parameters(remove_duplicate=False))
        params.update(dict(model.named_buffers()))
        rename = _key_renamer(model, params)
        ignore = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
        self._where: dict[str, tuple[str, str]] = {}  # tensor name -> (file, key in the file)
        unexpected = []
        for file in files:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                keys = list(handle.keys())
            for key in keys:
                name = rename(key)
                if name in params:
                    self._where[name] = (str(file), key)
                elif not any(p.search(key) for p in ignore):
                    unexpected.append(key)
        self._prefix = next(name for name, module in model.named_modules() if module is self.blocks.layers)
        if unexpected:
            raise ModelLoadError(f"the weights have {len(unexpected)} tensor(s) the model lacks "
                                 f"(e.g. {sorted(unexpected)[0]}): cannot stream them block by block",
                                 "pass --no-offload to load the model the usual way")
        self._load_rest()

    def _read(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The tensors ``names`` from the files, copied out of the memory map (whose pages would otherwise stay
        mapped, and counted in the process's resident memory, for as long as a file is open)."""
        from safetensors import safe_open

        files: dict[str, list[str]] = {}
        for name in names:
            files.setdefault(self._where[name][0], []).append(name)
        out = {}
        for file, members in files.items():
            with safe_open(file, framework="pt", device="cpu") as handle:
                for name in members:
                    out[name] = handle.get_tensor(self._where[name][1]).to(copy=True)
        return out

    def _set(self, name: str, value: torch.Tensor, trainable: bool = False) -> torch.Tensor:
        """Give tensor ``name`` the values ``value`` (from :meth:`_read`), on the device, in the dtype its meta
        placeholder has now; returns the placeholder (put it back to free the memory: the same object, so
        whoever holds it, e.g. ``weights.float32_weights``, still sees the model's own tensor)."""
        owner, leaf = self._owner(name)
        old = owner._parameters.get(leaf, owner._buffers.get(leaf))
        value = value.to(self.device, old.dtype)
        if leaf in owner._parameters:
            owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=trainable)
        else:
            owner._buffers[leaf] = value
        return old

    def _restore(self, name: str, old: torch.Tensor) -> None:
        owner, leaf = self._owner(name)
        (owner._parameters if leaf in owner._parameters else owner._buffers)[leaf] = old

    def _owner(self, name: str) -> tuple[Any, str]:
        path, _, leaf = name.rpartition(".")
        return self.model.get_submodule(path), leaf

    def _is_block(self, name: str) -> bool:
        return name.startswith(self._prefix + ".")

    def _load_rest(self) -> None:
        """Embeddings, final norm, head (and their buffers) onto the device; tied weights re-tied."""
        rest = [n for n in self._where if not self._is_block(n)]
        values = self._read(rest)
        for name, buf in list(self.model.named_buffers()):
            if name in values:
                self._set(name, values.pop(name))
            else:  # non-persistent buffers were computed at construction (rotary frequencies, masks)
                owner, leaf = self._owner(name)
                owner._buffers[leaf] = buf.to(self.device)
        for name, _ in list(self.model.named_parameters()):
            if name in values:
                self._set(name, values.pop(name))
        self.model.tie_weights()
        missing = [n for n, p in self.model.named_parameters() if p.is_meta and not self._is_block(n)]
        missing += [f"{self._prefix}.{i}.{n}" for i, block in enumerate(self.blocks.layers)
                    for n, _ in block.named_parameters() if f"{self._prefix}.{i}.{n}" not in self._where]
        if missing:
            raise ModelLoadError(f"the weights lack {len(missing)} tensor(s) of the model (e.g. {missing[0]})",
                                 "check that no shard is missing, or pass --no-offload")

    @contextlib.contextmanager
    def block(self, index: int, trainable: bool = False) -> Iterator[Any]:
        """Within the context, block ``index`` holds its weights on the device (with gradients if
        ``trainable``); afterwards its meta placeholders come back and the memory is freed."""
        block = self.blocks.layers[index]
        names = [f"{self._prefix}.{index}.{n}" for n, _ in block.named_parameters()]
        names += [f"{self._prefix}.{index}.{n}" for n, _ in block.named_buffers()
                  if f"{self._prefix}.{index}.{n}" in self._where]
        placeholders: list[tuple[str, torch.Tensor]] = []
        try:
            for name, value in self._read(names).items():
                placeholders.append((name, self._set(name, value, trainable)))
            yield block
        finally:
            for name, old in placeholders:
                self._restore(name, old)


def _key_renamer(model: Any, params: dict[str, Any]):
    """Checkpoint key -> parameter name, with transformers' own renamings (e.g. GPT-NeoX ``embed_out`` ->
    ``lm_head``) and base-model prefix handling; a key that needs a tensor conversion (fused MoE experts)
    cannot be streamed as is.

    Raises:
        UnsupportedArchitectureError: for a key that needs a conversion.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:  # older transformers: checkpoint keys are the parameter names
        prefix = getattr(model, "base_model_prefix", "")
        return lambda key: key if key in params or f"{prefix}.{key}" not in params else f"{prefix}.{key}"
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]

    def rename(key: str) -> str:
        name, converted = rename_source_key(key, renamings, converters, model.base_model_prefix, params)
        if converted is not None:
            raise UnsupportedArchitectureError(
                f"checkpoint tensor {key} must be converted on load: it cannot be streamed block by block",
                "pass --no-offload to load the model the usual way")
        return name
    return rename


def open_stream(spec: str | None, settings: Any) -> tuple[Any, WeightStream]:
    """Build the skeleton of ``spec`` with embeddings and head loaded, and a stream over its blocks.

    Returns:
        (a :class:`~shortllm.models.loading.Loaded` whose model is the skeleton, the stream).

    Raises:
        ModelLoadError, UnsupportedArchitectureError, DeviceError: see the messages.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from shortllm.models.loading import (Loaded, auto_dtype, check_settings, fingerprint, load_config,
                                         load_tokenizer, resolve_dtype, resolve_source)

    device = check_settings(settings)
    source = resolve_source(spec, settings.revision)
    config = load_config(source, settings.trust_remote_code)
    check_offload_type(config)
    files = weight_files(source)
    dtype = resolve_dtype(settings.dtype)
    if dtype == "auto":  # the stored tensors' dtype, as every load keeps (not config.json's dtype field)
        dtype = auto_dtype(source, config)
        dtype = _file_dtype(files) if dtype == "auto" else dtype
    log.info("Loading the embeddings and head of %s (blocks are read one at a time)", source.spec,
             extra={"phase": True})
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                 trust_remote_code=settings.trust_remote_code)
    model.eval()
    stream = WeightStream(model, files, device)
    loaded = Loaded(model, load_tokenizer(source, settings.trust_remote_code), source,
                    fingerprint(source, config), device)
    return loaded, stream


def _file_dtype(files: Sequence[Path]) -> torch.dtype:
    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as handle:
        for key in handle.keys():
            tensor = handle.get_slice(key)
            dtype = getattr(torch, FLOAT_DTYPES.get(tensor.get_dtype(), "float32"))
            if dtype.is_floating_point:
                return dtype
    return torch.float32


def capture_calls(model: Any, input_ids: torch.Tensor, upto: int) -> tuple[torch.Tensor, list[BlockCall]]:
    """Dry-run the model's forward with blocks ``0..upto`` recorded and bypassed, stopping after ``upto``.

    Returns:
        (the hidden state entering block 0, ``[N, T, H]``; the call of each block ``0..upto``).
    """
    layers = blocks_of(model).layers
    calls: list[BlockCall] = []
    first: list[torch.Tensor] = []

    def recorder(index: int):
        def forward(*args, **kwargs):
            hidden = _hidden_arg(args, kwargs)
            if index == 0:
                first.append(hidden)
            calls.append(BlockCall(tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "hidden_states"}))
            if index == upto:
                raise _Stop
            return _as_output(hidden, None)
        return forward

    with torch.no_grad(), patched_forwards((layers[i], lambda _, f=recorder(i): f) for i in range(upto + 1)):
        try:
            model(input_ids, use_cache=False)
        except _Stop:
            pass
    return first[0], calls


def run_block(block: Any, hidden: torch.Tensor, call: BlockCall) -> torch.Tensor:
    """``block`` applied to ``hidden`` ``[N, T, H]`` with the model's own extra arguments; the new hidden state."""
    out = block(hidden, *call.args, **call.kwargs)
    return out[0] if isinstance(out, tuple) else out


def continue_from(model: Any, hidden: torch.Tensor):
    """Context: the model's forward runs its embeddings, bypasses every block with the last one returning
    ``hidden`` ``[N, T, H]``, then its own final norm and head (logit scaling and soft-capping included).
    Gradients flow to ``hidden`` when grad mode is on."""
    n = len(blocks_of(model).layers)
    return bypass(model, inject=(n - 1, hidden))


def head_logits(model: Any, input_ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, T, V]`` of the model whose last block outputs ``hidden`` (see :func:`continue_from`)."""
    with torch.no_grad(), continue_from(model, hidden):
        return model(input_ids, use_cache=False).logits


def model_bytes(files: Sequence[Path], dtype: Any) -> int:
    """Bytes the weights take in memory: the safetensors sizes, rescaled when ``dtype`` differs from the files'."""
    size = sum(f.stat().st_size for f in files)
    if isinstance(dtype, torch.dtype):
        size = int(size * dtype.itemsize / _file_dtype(files).itemsize)
    return size


def available_bytes(device: str) -> int:
    """Free memory on ``device``: free GPU memory for CUDA, available RAM otherwise."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    import psutil

    return psutil.virtual_memory().available


def choose_offload(spec: str | None, settings: Any, forced: bool | None,
                   criterion: str | None = None) -> tuple[bool, str]:
    """Decide between in-memory and layer-by-layer scoring.

    Args:
        forced: ``--offload`` (True) / ``--no-offload`` (False), or None to decide by size: layer by layer
            when the weights x :data:`HEADROOM` + 1 GiB do not fit in available memory (RAM on CPU, free
            memory on CUDA), for a supported family and a ``criterion`` with a layer-by-layer form.

    Returns:
        (offload?, a one-line reason for the log).

    Raises:
        DeviceError: ``--offload`` with ``--device-map``.
    """
    if forced and settings.device_map:
        raise DeviceError("--offload and --device-map do not go together: --device-map spreads the whole model "
                          "in memory", "drop one of them")
    if forced is not None:
        return forced, "asked with --offload" if forced else "asked with --no-offload"
    if settings.device_map:
        return False, "--device-map spreads the model in memory"
    from shortllm.models.loading import check_settings, load_config, resolve_dtype, resolve_source

    device = check_settings(settings)
    source = resolve_source(spec, settings.revision)
    if source.kind == "hub":
        return False, "hub model: size unknown before download"
    files = sorted(Path(source.path).glob("*.safetensors"))
    if not files:
        return False, "no safetensors files"
    need, free = model_bytes(files, resolve_dtype(settings.dtype)), available_bytes(device)
    sizes = f"{need / 2**30:.1f} GiB of weights, {free / 2**30:.1f} GiB free on {device}"
    if need * HEADROOM + HEADROOM_BYTES <= free:
        return False, f"the model fits in memory ({sizes})"
    config = load_config(source, settings.trust_remote_code)
    model_type = getattr(config, "model_type", "?")
    if model_type not in OFFLOAD_TYPES or criterion not in (None, *LAYERWISE_CRITERIA):
        what = f"model type '{model_type}'" if model_type not in OFFLOAD_TYPES else f"criterion '{criterion}'"
        log.warning("the model may not fit in memory (%s) and layer-by-layer scoring does not support %s; "
                    "trying in memory", sizes, what)
        return False, f"the model may not fit ({sizes}) but {what} cannot be scored layer by layer"
    return True, f"the model would not fit in memory ({sizes})"
