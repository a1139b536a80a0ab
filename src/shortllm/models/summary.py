"""What ``shortllm inspect`` reports: architecture, blocks, parameters, per-layer types, ratio plans."""

from __future__ import annotations

from typing import Any

from shortllm.models.arch import ARCHITECTURES, blocks_of
from shortllm.models.loading import LoadSettings, fingerprint, load_config, load_skeleton
from shortllm.models.config_rewrite import original_indices
from shortllm.models.params import count_params
from shortllm.pruning.plan import ratio_table


def layer_types(config: Any, num_blocks: int) -> list[str]:
    """Per-block attention type: the config's ``layer_types`` if present, else sliding/full from settings."""
    types = getattr(config, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == num_blocks:
        return [str(t) for t in types]
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", window is not None)
    kind = "sliding_attention" if window and uses_window else "full_attention"
    return [kind] * num_blocks


def describe(spec: str | None, settings: LoadSettings = LoadSettings()) -> dict[str, Any]:
    """Describe a model from its config alone (built on the meta device: no weights are read).

    Returns:
        A JSON-ready dict: model, architecture, dtype, blocks, parameters, per-block rows and the
        blocks that ``--ratio`` 0.1..0.8 would remove.
    """
    model, source = load_skeleton(spec, settings)
    config = model.config
    blocks = blocks_of(model)
    counts = count_params(model)
    n = len(blocks.layers)
    types = layer_types(config, n)
    origin = original_indices(config, n)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return {
        "model": source.spec,
        "path": source.path,
        "fingerprint": fingerprint(source, load_config(source, settings.trust_remote_code)),
        "model_type": config.model_type,
        "architecture": (getattr(config, "architectures", None) or [type(model).__name__])[0],
        "in_table": config.model_type in ARCHITECTURES,
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "num_blocks": n,
        "hidden_size": getattr(config.get_text_config(), "hidden_size", None),
        "vocab_size": getattr(config.get_text_config(), "vocab_size", None),
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "params": {
            "total": counts.total, "blocks": counts.blocks, "embeddings": counts.embeddings,
            "head": counts.head, "other": counts.other,
        },
        "blocks": [
            {"index": i, "original_index": origin[i], "params": counts.per_block[i], "layer_type": types[i]}
            for i in range(n)
        ],
        "ratios": ratio_table(counts),
        "files": model_files(source),
    }


def model_files(source: Any) -> dict[str, str]:
    """The files behind a model spec: ``folder`` (what is loaded) and, for the embedded model or a ``.gguf``,
    the ``gguf`` it was converted from (the natural input to try GGUF output on)."""
    from pathlib import Path

    from shortllm.models.demo import find_demo_gguf

    from shortllm.errors import ModelLoadError

    files = {"folder": source.path}
    if source.kind == "alias":
        try:
            files["gguf"] = str(find_demo_gguf(download=False))
        except ModelLoadError:  # the conversion is cached and its GGUF was removed since: nothing to name
            pass
    elif source.kind == "gguf":
        files["gguf"] = str(Path(source.spec).expanduser().resolve())
    return files
