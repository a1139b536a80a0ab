"""Small inputs for the training tests: a short text file, a pruned tiny model, quick options."""

from __future__ import annotations

from pathlib import Path

from shortllm.models.loading import LoadSettings
from shortllm.training.config import DataOptions, TrainConfig


def write_small_text(path: Path) -> Path:
    """About 40 KB of English (the first 12 pydoc topics), blank lines between documents."""
    from pydoc_data.topics import topics

    path.write_text("\n\n".join(topics[k] for k in sorted(topics)[:12]))
    return path


def make_pruned(model_dir: Path, out: Path, blocks: list[int]) -> Path:
    """Prune ``blocks`` of ``model_dir`` into ``out`` with the prune job (so ``out`` has a shortllm.json)."""
    from shortllm.pruning.run import PruneRequest, prune

    prune(PruneRequest(model=str(model_dir), out=out, blocks=blocks, settings=LoadSettings(device="cpu")))
    return out


def quick_config(method: str, model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    """A TrainConfig that trains a tiny model for a few steps on CPU in about a second."""
    data_kw = {k: kw.pop(k) for k in ("eval_fraction", "eval_data", "format", "max_eval_rows") if k in kw}
    defaults = dict(seq_len=32, batch_size=2, max_steps=3, eval_every=0, save_every=0,
                    settings=LoadSettings(dtype="float32", device="cpu"))
    return TrainConfig(method=method, model=str(model), out=out,
                       data=DataOptions(data=str(data), **{"max_eval_rows": 2, **data_kw}), **{**defaults, **kw})
