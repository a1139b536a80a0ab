"""Out-of-core surgery: prune a checkpoint file by file, never instantiating the model.

When the blocks to remove are known before loading (``--blocks``, or ``--scores`` from an earlier run), the
pruned checkpoint is the source's safetensors with the removed blocks' tensors left out and the kept blocks'
tensors renamed (``{blocks}.{old}.`` -> ``{blocks}.{new}.``, the block path from the architecture table), copied
tensor by tensor (``models/checkpoint.py``); the config is rewritten by ``config_rewrite.rewrite_config``, the same
function in-memory surgery uses, and the tokenizer, generation config, chat template and other small files
are copied. Peak memory is one copy buffer; time is about that of copying the kept bytes.

Nothing model-sized is loaded to check it either: the source must cover its architecture exactly before
anything is written, and the output the pruned architecture after (a stock ``from_pretrained`` onto the meta
device, judged by the same loading report as every load); the written files must hold every kept tensor exactly
once with the source's dtype and shape. A model of at most :data:`LOGITS_CHECK_MAX_BYTES` of weights is also
loaded, pruned in memory and compared logit for logit with a stock ``from_pretrained`` of the output
(``export.verify_reload``).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortllm.models.checkpoint import (TensorEntry, block_prefix, list_tensors, rename_blocks, verify_checkpoint,
                                        write_checkpoint)
from shortllm.models.loading import LoadSettings, ModelSource

log = logging.getLogger(__name__)

# Models with at most this many bytes of weights also get the full logits check (the source loaded and pruned
# in memory, the output reloaded: about twice the model in memory); above it, the file-level check only.
LOGITS_CHECK_MAX_BYTES = 1 << 30
# Top-level files that are not copied: weights (rewritten, or pickles that are never read), the config
# (rewritten), and what every shortllm output writes afresh.
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".gguf", ".h5", ".msgpack",
                        ".onnx", ".ot", ".npz", ".index.json")
_NOT_COPIED = {"config.json", "README.md", "shortllm.json"}
# What to fetch of a hub repository: top-level weights in transformers' layout and the small files.
_HUB_PATTERNS = ["model*.safetensors", "*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken", "*.vocab", "*.py"]
_DTYPE_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


@dataclass(frozen=True)
class Source:
    """A checkpoint out-of-core surgery can read: its folder, tensors (from headers) and block prefix."""

    folder: Path
    tensors: dict[str, TensorEntry]
    prefix: str
    num_blocks: int

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.tensors.values())


def _block_paths(skeleton: Any) -> list[str]:
    """Where the blocks may sit in the files: the names the architecture table gives (how ``save_pretrained``
    writes them, then the module path), then the same without the base model's prefix (bare base models)."""
    from shortllm.models.arch import block_key_prefixes, blocks_of, spec_of

    layers = blocks_of(skeleton).layers
    paths = [*block_key_prefixes(skeleton.config), spec_of(skeleton.config).blocks_path]
    paths += [name for name, module in skeleton.named_modules() if module is layers]
    base = getattr(skeleton, "base_model_prefix", "")
    paths += [p[len(base) + 1:] for p in paths if base and p.startswith(base + ".")]
    return list(dict.fromkeys(p for p in paths if p))


def _folder(source: ModelSource) -> Path:
    """The local folder of a source; a hub id's snapshot (downloaded when not cached, offline when cached)."""
    if source.kind != "hub":
        return Path(source.path)
    from huggingface_hub import snapshot_download

    from shortllm.data.offline import hub_access
    from shortllm.models.loading import _hub_error

    try:
        with hub_access():
            return Path(snapshot_download(source.path, revision=source.revision, allow_patterns=_HUB_PATTERNS))
    except Exception as err:  # huggingface_hub raises many kinds; all mean the same to the user
        raise _hub_error(source, err) from err


def readable(source: ModelSource, skeleton: Any, num_blocks: int, settings: LoadSettings) -> Source | None:
    """The checkpoint to prune out of core, or None (with the reason logged) when only the in-memory path can.

    The in-memory path is left for: a folder without safetensors weights (pickled ``.bin`` only, which it
    refuses), a ``--dtype`` other than the checkpoint's (a cast needs the model's keep-in-fp32 rules), and a
    layout where the blocks' tensors are not found under the architecture's block path.

    Raises:
        ModelLoadError: an unreadable index or safetensors header, or a hub id that cannot be fetched.
    """
    folder = _folder(source)
    tensors = list_tensors(folder)
    if tensors is None:
        log.info("%s has no safetensors weights: using in-memory surgery", source.spec)
        return None
    wanted = _DTYPE_NAMES.get(settings.dtype)
    if wanted and any(e.dtype != wanted for e in tensors.values() if e.dtype in _DTYPE_NAMES.values()):
        log.info("--dtype %s differs from the checkpoint's: using in-memory surgery", settings.dtype)
        return None
    prefix = block_prefix(tensors, _block_paths(skeleton), num_blocks)
    if prefix is None:
        log.warning("the blocks of %s are not under %s in its files: using in-memory surgery", source.spec,
                    " or ".join(_block_paths(skeleton)))
        return None
    return Source(folder, tensors, prefix, num_blocks)


def _copy_small_files(src: Path, dst: Path) -> list[str]:
    """Copy the source's top-level non-weight files (tokenizer, generation config, chat template, code...)."""
    copied = []
    for path in sorted(src.iterdir()):
        name = path.name
        if (name in _NOT_COPIED or name.startswith(".") or name.endswith(_NOT_COPIED_SUFFIXES)
                or not path.is_file()):
            continue
        shutil.copyfile(path, dst / name)  # follows the hub cache's symlinks
        copied.append(name)
    return copied


def check_covers(folder: Path, config: Any, spec: str, trust_remote_code: bool = False) -> None:
    """Refuse a checkpoint that does not cover its architecture exactly, without loading it: a stock
    ``from_pretrained`` onto the meta device (no tensor is read into memory) and the same loading report as
    every other load (``loading.check_loading_info``: missing, unexpected, wrongly shaped tensors).

    Raises:
        ModelLoadError: naming what does not match (and a name prefix every unexpected tensor carries).
    """
    from shortllm.models.arch import auto_class
    from shortllm.models.loading import from_pretrained_strict

    from_pretrained_strict(str(folder), spec, model_class=auto_class(config), device_map="meta",
                           trust_remote_code=trust_remote_code)


def write_pruned(source: Source, config: Any, keep: list[int], out: Path, max_shard_size: str | int,
                 total_parameters: int | None = None, spec: str | None = None,
                 trust_remote_code: bool = False) -> dict[str, Any]:
    """Write the checkpoint keeping blocks ``keep`` (current indices) of ``source`` into ``out``, and verify it.

    Before anything is written the source must cover its architecture exactly (:func:`check_covers`, as every
    load of shortllm is strict); after, the written files must hold every kept tensor exactly once with the
    source's dtype and shape (``checkpoint.verify_checkpoint``) and load with stock ``from_pretrained`` as the
    pruned architecture with nothing missing, unexpected or misshapen (:func:`check_covers` again).

    Args:
        config: the source's config; rewritten in place by ``config_rewrite.rewrite_config`` and saved.
        spec: the model spec, for messages (default: the source folder).
        out: an empty folder (the atomic temp folder of the job).
        max_shard_size: e.g. ``"5GB"`` (see ``checkpoint.parse_size``).
        total_parameters: recorded in the index of a sharded output, as ``save_pretrained`` does.

    Returns:
        What was written: tensor, byte and shard counts, tensors of removed blocks left out, files copied.

    Raises:
        BlockSelectionError, UnsupportedArchitectureError: a cut the config cannot state (nothing written).
        ModelLoadError: the source does not cover its architecture (nothing written).
        ShortLLMError: the written files do not hold what was meant (``checkpoint.verify_checkpoint``).
    """
    from shortllm.models.config_rewrite import rewrite_config

    spec = spec or str(source.folder)
    check_covers(source.folder, config, spec, trust_remote_code)
    rewrite_config(config, keep, source.num_blocks)
    renamed = rename_blocks(source.tensors, source.prefix, keep)
    entries = [(new, source.tensors[old]) for old, new in renamed.items()]
    log.info("Writing %d tensors (%.2f GB) to %s", len(entries), sum(e.nbytes for _, e in entries) / 1e9, out,
             extra={"phase": True})
    weight_map = write_checkpoint(out, entries, max_shard_size, total_parameters)
    config.save_pretrained(out)
    copied = _copy_small_files(source.folder, out)
    checked = verify_checkpoint(out, {new: (e.dtype, e.shape) for new, e in entries})
    check_covers(out, config, spec, trust_remote_code)
    return {"tensors": checked, "bytes": sum(e.nbytes for _, e in entries),
            "shards": len(set(weight_map.values())), "tensors_removed": len(source.tensors) - len(entries),
            "files_copied": copied}


def check_logits(spec: str | None, settings: LoadSettings, removed: list[int], out: Path) -> float:
    """The full check for a small model: load the source, prune it in memory, compare logits with ``out``.

    Returns:
        The largest absolute logit difference (``export.verify_reload``).

    Raises:
        ShortLLMError: the output does not compute what in-memory surgery computes.
    """
    from shortllm.models.loading import load_model
    from shortllm.models.surgery import drop_blocks
    from shortllm.pruning.export import verify_reload

    from dataclasses import replace

    loaded = load_model(spec, replace(settings, kernels=False))  # the stock modules: an exact comparison
    drop_blocks(loaded.model, removed)
    return verify_reload(out, loaded.model)


def prune_files(source: Source, config: Any, keep: list[int], removed: list[int], out: Path,
                max_shard_size: str | int, total_parameters: int, spec: str | None,
                settings: LoadSettings) -> tuple[dict[str, Any], float | None]:
    """:func:`write_pruned`, then the logits check (:func:`check_logits`) when the weights are at most
    :data:`LOGITS_CHECK_MAX_BYTES`.

    Returns:
        (what was written, with ``"verify"``: ``"tensors+logits"`` or ``"tensors"``; the largest logit
        difference, or None when only the tensors were checked).
    """
    from shortllm.models.demo import DEMO_ALIAS

    written = write_pruned(source, config, keep, out, max_shard_size, total_parameters, spec or DEMO_ALIAS,
                           settings.trust_remote_code)
    if source.nbytes > LOGITS_CHECK_MAX_BYTES:
        log.info("Checked %d tensors (names, dtypes, shapes, a stock from_pretrained on the meta device); the "
                 "logits check is skipped above %.2f GB of weights", written["tensors"], LOGITS_CHECK_MAX_BYTES / 1e9)
        return {**written, "verify": "tensors"}, None
    log.info("Reload check: loading the saved model with transformers and comparing logits", extra={"phase": True})
    return {**written, "verify": "tensors+logits"}, check_logits(spec, settings, removed, out)
