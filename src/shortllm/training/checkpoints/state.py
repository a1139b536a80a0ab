"""Training state to and from files that cannot run code: tensors as safetensors, everything else as JSON.

:mod:`shortllm.training.checkpoints.folders` decides which file of a checkpoint folder holds what; this module turns one
kind of state into one file and back. Each ``write_*`` saves tensors into a safetensors file whose metadata
holds the other values as JSON and a SHA-256 of tensors and metadata. Each ``restore_*`` verifies that checksum
and checks what it read against the run it is loaded into (names, shapes, dtypes, the structure of the JSON
values) before changing anything, so a damaged or foreign file is named in a :class:`TrainingError` instead of
resuming from wrong numbers. Nothing is pickled or unpickled.

Under FSDP2 the trained tensors are DTensors: each process writes and restores only the shard it holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

from shortllm.errors import reason
from shortllm.training.config import TrainingError
from shortllm.wording import plural

log = logging.getLogger(__name__)


def _unusable(path: Path, problem: str) -> TrainingError:
    return TrainingError(f"--resume: the checkpoint file {path} {problem}",
                         f"delete {path.parent} to resume from the checkpoint before it, or start over without "
                         "--resume (with --overwrite)")


def damaged(path: Path, why: str) -> TrainingError:
    """The error for a checkpoint file that cannot be used: ``why`` says what is wrong with ``path``.

    Returns:
        A TrainingError naming the file, with the hint to delete its folder or start over (the caller raises it).
    """
    return _unusable(path, f"is damaged or not a shortllm checkpoint ({why})")


# ---- tensors to and from safetensors, with a checksum ---------------------------------------------------------

def _digest(tensors: dict[str, Any], meta: dict[str, str]) -> str:
    import torch

    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _write(path: Path, tensors: dict[str, Any], meta: dict[str, str]) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    try:
        save_file(tensors, str(path), metadata={**meta, "sha256": _digest(tensors, meta)})
    except SafetensorError as err:  # I/O errors (disk full, permissions) come as this type
        raise OSError(str(err)) from err


def _read(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and metadata of a checkpoint file, its checksum verified.

    Raises:
        TrainingError: missing, unreadable, not safetensors, or a checksum that does not match.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise _unusable(path, "is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for every kind of bad file
        raise damaged(path, reason(err)) from err
    expected = meta.pop("sha256", None)
    if expected is None or _digest(tensors, meta) != expected:
        raise damaged(path, "checksum mismatch")
    return tensors, meta


def _meta_json(path: Path, meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except (KeyError, json.JSONDecodeError) as err:
        raise damaged(path, f"no valid '{key}' entry") from err


def conform(saved: Any, current: Any, where: str) -> Any:
    """``saved`` (read from JSON) checked against the structure of ``current`` and given its tuple types.

    Args:
        saved: the value as read back.
        current: the same state of this run (a ``state_dict()``), whose keys, lengths and kinds of values
            ``saved`` must have; a whole number is accepted where ``current`` holds a float.
        where: the name of the value in error messages (``"scheduler"``, ``"param_groups"``).

    Returns:
        ``saved``, with tuples where ``current`` has tuples.

    Raises:
        ValueError: a missing or extra key, another length, or another kind of value (named by ``where``).
    """
    if isinstance(current, dict):
        if not isinstance(saved, dict) or set(saved) != set(current):
            raise ValueError(f"{where} has other entries than this run's")
        return {k: conform(saved[k], current[k], f"{where}.{k}") for k in current}
    if isinstance(current, (list, tuple)):
        if not isinstance(saved, list) or len(saved) != len(current):
            raise ValueError(f"{where} has another length than this run's")
        return type(current)(conform(s, c, f"{where}[{i}]") for i, (s, c) in enumerate(zip(saved, current)))
    if isinstance(current, (bool, str, int)) or current is None:
        ok = type(saved) is type(current)
    else:  # a float: JSON writes floats as floats, but accept a whole number written by hand
        ok = isinstance(current, float) and isinstance(saved, (int, float)) and not isinstance(saved, bool)
    if not ok:
        raise ValueError(f"{where} is {saved!r}, not a value like {current!r}")
    return saved


# ---- what training changes ------------------------------------------------------------------------------------

def _is_dtensor(t: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(t, DTensor)


def _local(t: Any) -> Any:
    """The part of ``t`` this process holds (the tensor itself unless it is sharded)."""
    return t.to_local() if _is_dtensor(t) else t


def _trained(model: Any) -> dict[str, Any]:
    """Name -> tensor of what training changes: trainable parameters (shared ones once) and persistent buffers."""
    tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    persistent = set(model.state_dict(keep_vars=True))
    tensors.update({n: b for n, b in model.named_buffers() if n in persistent})
    return tensors


def is_sharded(model: Any) -> bool:
    """Whether any tensor training changes in ``model`` (unwrapped) is sharded over processes (FSDP2)."""
    return any(_is_dtensor(t) for t in _trained(model).values())


def _params(optimizer: Any) -> list[Any]:
    """The optimizer's parameters in the order its state dict numbers them."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def _param_names(optimizer: Any, model: Any) -> list[str | None]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names.get(id(p)) for p in _params(optimizer)]


# ---- the model ------------------------------------------------------------------------------------------------

def write_model(path: Path, model: Any) -> None:
    """Write what training changes in ``model`` (unwrapped; this process's shards when sharded) to ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    _write(path, {n: _local(t) for n, t in _trained(model).items()}, {})


def restore_model(path: Path, model: Any) -> None:
    """Copy the tensors written by :func:`write_model` into ``model`` (unwrapped), all names, shapes and dtypes
    checked first.

    Raises:
        TrainingError: the file is missing or damaged, or does not hold exactly the tensors training changes.
    """
    import torch

    tensors, _ = _read(path)
    trained = _trained(model)
    if set(tensors) != set(trained):
        missing, extra = sorted(set(trained) - set(tensors)), sorted(set(tensors) - set(trained))
        names = ", ".join((missing or extra)[:3])
        raise damaged(path, f"{plural(len(missing), 'tensor')} of the model missing, {len(extra)} unexpected: "
                            f"{names}")
    for name, target in trained.items():
        local, saved = _local(target), tensors[name]
        if saved.shape != local.shape or saved.dtype != local.dtype:
            raise damaged(path, f"{name} is {saved.dtype} {list(saved.shape)}, the model's "
                                f"{local.dtype} {list(local.shape)}")
    with torch.no_grad():
        for name, target in trained.items():
            _local(target).copy_(tensors[name])


# ---- the optimizer --------------------------------------------------------------------------------------------

def write_optimizer(path: Path, optimizer: Any, model: Any) -> None:
    """Write the optimizer's state to ``path``: its tensors as ``<parameter index>.<name>``, and as JSON metadata
    its other values, its parameter groups and the names of its parameters in ``model`` (unwrapped).

    Raises:
        OSError: the file cannot be written.
    """
    sd = optimizer.state_dict()
    tensors, values = {}, {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if hasattr(value, "shape"):
                tensors[f"{idx}.{key}"] = _local(value)
            else:
                values[f"{idx}.{key}"] = value
    meta = {"param_groups": json.dumps(sd["param_groups"]), "values": json.dumps(values),
            "param_names": json.dumps(_param_names(optimizer, model))}
    _write(path, tensors, meta)


def restore_optimizer(path: Path, optimizer: Any, model: Any) -> None:
    """Load the state written by :func:`write_optimizer` into ``optimizer``, after checking that it trains the same
    parameters of ``model`` (unwrapped) in the same groups with state of the same shapes.

    Raises:
        TrainingError: the file is missing, damaged or from an optimizer other than this run's.
    """
    tensors, meta = _read(path)
    groups, values, names = (_meta_json(path, meta, k) for k in ("param_groups", "values", "param_names"))
    if names != _param_names(optimizer, model):
        raise damaged(path, "its parameters are not the ones this run trains")
    params = _params(optimizer)
    try:
        current_groups = optimizer.state_dict()["param_groups"]
        groups = conform(groups, current_groups, "param_groups")
        if [g["params"] for g in groups] != [g["params"] for g in current_groups]:
            raise ValueError("its parameter groups hold other parameters than this run's")
        state: dict[int, dict[str, Any]] = {}
        for key, value in [*tensors.items(), *values.items()]:
            idx, _, name = key.partition(".")
            state.setdefault(int(idx), {})[name] = value
        if any(not 0 <= i < len(params) for i in state) or len({frozenset(s) for s in state.values()}) > 1:
            raise ValueError("its state entries do not match the parameters")
        for idx, entry in state.items():
            param = params[idx]
            for name, value in entry.items():
                if hasattr(value, "shape") and value.ndim > 0:
                    if value.shape != _local(param).shape:
                        raise ValueError(f"{name} of {names[idx]} is {list(value.shape)}, the parameter "
                                         f"{list(_local(param).shape)}")
                    if _is_dtensor(param):
                        from torch.distributed.tensor import DTensor

                        entry[name] = DTensor.from_local(value.to(_local(param).device), param.device_mesh,
                                                         param.placements, run_check=False, shape=param.shape,
                                                         stride=param.stride())
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        raise damaged(path, str(err)) from err


# ---- random generators ----------------------------------------------------------------------------------------

def write_rng(path: Path) -> None:
    """Write this process's random generator states (torch CPU and CUDA, Python, NumPy) to ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    import numpy as np
    import torch

    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "python": torch.tensor(mt, dtype=torch.int64),
               "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64))}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {"python": json.dumps([version, gauss]), "numpy": json.dumps([kind, int(pos), int(has_gauss), cached])}
    _write(path, tensors, meta)


def restore_rng(path: Path) -> None:
    """Set this process's random generators to the states written by :func:`write_rng`. CUDA states saved on
    another number of GPUs are not restored (a warning says so).

    Raises:
        TrainingError: the file is missing or damaged, or a state is not one its generator accepts.
    """
    import numpy as np
    import torch

    tensors, meta = _read(path)
    version, gauss = _meta_json(path, meta, "python")
    kind, pos, has_gauss, cached = _meta_json(path, meta, "numpy")
    try:
        random.setstate((version, tuple(tensors["python"].tolist()), gauss))
        np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(tensors["torch"])
        cuda = [tensors[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in tensors))]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        elif cuda or torch.cuda.is_available():
            log.warning("the checkpoint's CUDA generator states do not fit this machine's GPUs; not restored")
    except (KeyError, ValueError, TypeError, RuntimeError, OverflowError) as err:
        raise damaged(path, f"bad random generator state: {err}") from err
