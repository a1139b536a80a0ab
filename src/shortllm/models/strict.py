"""The one door through which weights load: ``from_pretrained`` that refuses a checkpoint not covering the model
exactly, with the library defaults that change what is computed (Hub kernels) set by us."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shortllm.errors import ModelLoadError
from shortllm.wording import plural


def from_pretrained_strict(path: str, spec: str, model_class: Any = None, *, kernels: bool = False,
                           **kwargs: Any) -> Any:
    """``from_pretrained`` that refuses a checkpoint not covering the model exactly, with the library defaults
    that change what is computed set by us.

    Every place shortllm loads weights goes through here (local, hub, alias, GGUF conversion, teachers, the
    reload check, the meta-device coverage check), so a model whose weights did not load is never pruned,
    trained or measured, and no installed release decides for us whether layers are swapped for Hub kernels.

    Hub kernels: transformers 5.25 turns ``use_kernels`` on by default (``kernels`` package, unless
    ``USE_HUB_KERNELS=0``); that replaces modules such as RMSNorm and the MLP with kernels fetched from the Hub,
    cannot be applied on the meta device (``ValueError: Unsupported device type 'meta'``) and needs the network.
    shortllm always passes ``use_kernels`` explicitly: False unless ``kernels`` is True, and always False for a
    load onto the meta device (nothing is computed there).

    Args:
        path: what ``from_pretrained`` takes (local folder or hub id).
        spec: the user's model spec, for messages.
        model_class: the class to load with (default: the architecture table's auto class for the
            checkpoint's config, ``AutoModelForCausalLM`` or, for a multimodal checkpoint,
            ``AutoModelForImageTextToText``, so the checkpoint loads as the class it was saved as).
        kernels: let transformers swap layers for Hub kernels (``--kernels``; GPU users who want speed and
            accept last-bit differences). Ignored for ``device_map="meta"``.
        **kwargs: passed to ``from_pretrained`` (``use_kernels`` is refused: pass ``kernels``).

    Raises:
        ModelLoadError: missing, unexpected or shape-mismatched tensors (see :func:`check_loading_info`);
            other failures propagate as ``from_pretrained`` raised them.
    """
    if "use_kernels" in kwargs:
        raise TypeError("pass kernels=..., not use_kernels: the loading door decides it")
    kwargs["use_kernels"] = bool(kernels) and kwargs.get("device_map") != "meta"
    if model_class is None:
        from transformers import AutoConfig

        from shortllm.models.arch import auto_class

        model_class = auto_class(AutoConfig.from_pretrained(
            path, **{k: kwargs[k] for k in ("revision", "trust_remote_code") if k in kwargs}))
    # Shape mismatches are collected (not raised with a generic message) so the error can name them.
    try:
        model, info = model_class.from_pretrained(path, output_loading_info=True, ignore_mismatched_sizes=True,
                                                  **kwargs)
    except Exception:
        # The safetensors library's errors name no file ("incomplete metadata, file not fully covered"): a
        # damaged file of a local folder is refused naming the file; anything else keeps its own error.
        if Path(path).is_dir() and "gguf_file" not in kwargs:
            from shortllm.models.checkpoint import check_weight_files

            check_weight_files(Path(path))
        raise
    check_loading_info(info, spec)
    return model


def _first(keys: Any, few: int = 3) -> str:
    names = sorted(k if isinstance(k, str) else k[0] for k in keys)
    return ", ".join(names[:few]) + (", ..." if len(names) > few else "")


def check_loading_info(info: dict[str, Any], spec: str) -> None:
    """Refuse a load that did not cover the model exactly.

    ``info`` is the loading report of ``from_pretrained(..., output_loading_info=True)``. transformers already
    leaves out of it the keys the architecture declares ignorable (``_keys_to_ignore_on_load_*``, a tied head
    absent from the file), so anything left means freshly initialised or dropped weights.

    Raises:
        ModelLoadError: naming how many tensors are missing, unexpected or of the wrong shape, and the first few.
    """
    missing, unexpected = info.get("missing_keys") or (), info.get("unexpected_keys") or ()
    mismatched, errors = info.get("mismatched_keys") or (), info.get("error_msgs") or ()
    problems = []
    if missing:
        problems.append(f"{plural(len(missing), 'missing tensor')} (e.g. {_first(missing)})")
    if unexpected:
        problems.append(f"{plural(len(unexpected), 'unexpected tensor')} (e.g. {_first(unexpected)})")
    if mismatched:
        key, found, wanted = sorted(mismatched, key=lambda m: m[0])[0]
        problems.append(f"{plural(len(mismatched), 'tensor')} of the wrong shape (e.g. {key}: {tuple(found)} in the file, "
                        f"{tuple(wanted)} in the model)")
    if errors:
        problems.append(f"{plural(len(errors), 'load error')} ({' '.join(str(errors[0]).split())[:120]})")
    if not problems:
        return
    prefix = _common_prefix_hint(missing, unexpected)
    raise ModelLoadError(
        f"the weights of '{spec}' do not match its architecture: " + "; ".join(problems)
        + (f"; every unexpected name starts with '{prefix}'" if prefix else ""),
        ("strip the prefix from the tensor names (e.g. merge and save the adapter with peft first)" if prefix
         else "check that config.json belongs to these weights and that no shard is missing or truncated"),
    )


def _common_prefix_hint(missing: Any, unexpected: Any) -> str | None:
    """The extra prefix every unexpected key carries when it explains the missing keys (adapter tooling)."""
    if not missing or not unexpected:
        return None
    first = min(unexpected)
    for m in missing:
        if first.endswith("." + m):
            prefix = first[: -len(m)]
            if all(k.startswith(prefix) for k in unexpected):
                return prefix
    return None
