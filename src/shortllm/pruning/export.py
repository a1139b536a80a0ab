"""Writing outputs: atomic folders, the ``shortllm.json`` manifest, model cards, and the reload check."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import platform
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from shortllm import __version__
from shortllm.errors import OutputError, ShortLLMError
from shortllm.tempdirs import make_parents, make_temp_beside, remove_created, remove_stale_temp

log = logging.getLogger(__name__)

MANIFEST = "shortllm.json"


Inputs = Iterable[tuple[str, "str | Path | None"]]


def check_output_dir(out: Path, overwrite: bool, inputs: Inputs = ()) -> None:
    """Refuse an output path that cannot be used, before any slow work starts.

    Args:
        out: the ``--out`` directory.
        overwrite: whether a non-empty ``out`` may be replaced.
        inputs: ``(what, path)`` pairs of everything the run reads (model, teacher, data, scores, checkpoints);
            ``None`` paths (hub ids, named datasets) are skipped. See :func:`check_no_overlap`.

    Raises:
        OutputError: ``out`` is a file, a non-empty directory without ``overwrite``, not writable, or overlaps
            an input or the current directory.
    """
    check_no_overlap(out, inputs)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is an existing file", "choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"--out {out} is not empty", "choose another directory or pass --overwrite")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write to {out}: {parent} is a file, not a folder", "choose a directory path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {out}: {parent} is not writable", "choose a writable directory")
    try:  # permission bits do not tell everything (root in /proc, read-only mounts): make a folder there and remove it
        os.rmdir(tempfile.mkdtemp(prefix=".shortllm-probe-", dir=parent))
    except OSError as err:
        raise OutputError(f"cannot write to {out}: {parent} does not take new folders ({err.strerror})",
                          "choose a writable directory") from None


def data_inputs(label: str, spec: str | None, data_dir: str | None = None) -> list[tuple[str, Path]]:
    """The local paths a data spec reads (a file or folder it names, and the data directory), for
    :func:`check_no_overlap`; named and hub datasets outside a data directory read nothing local."""
    found: list[tuple[str, Path]] = []
    if spec and Path(spec).expanduser().exists():
        found.append((label, Path(spec)))
    value = data_dir if data_dir not in (None, "") else os.environ.get("SHORTLLM_DATA_DIR") or None
    if value is not None:
        found.append(("data directory", Path(value)))
    return found


def model_inputs(label: str, spec: str | None) -> list[tuple[str, Path]]:
    """``(label, path)`` for every local file or folder a model spec reads, for :func:`check_no_overlap`."""
    from shortllm.models.loading import model_paths

    return [(label, path) for path in model_paths(spec)]


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_no_overlap(out: Path, inputs: Inputs = (), what: str = "--out") -> None:
    """Refuse an output that is, contains, or lies inside an input, or that is or contains the current directory.

    Paths are compared after resolving ``~``, relative parts and symlinks, so ``--out .`` in the model's folder,
    ``--out ..`` above it, or a symlink to it are all caught. Writing an output replaces the whole folder (an
    atomic rename), so any overlap would destroy or change an input.

    Raises:
        OutputError: naming the input and how the paths overlap.
    """
    target = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if _within(cwd, target):
        raise OutputError(
            f"{what} {out} is {'the current directory' if cwd == target else 'a folder above the current directory'},"
            " which writing the output would replace", "choose a new folder, e.g. --out ./pruned")
    for label, path in inputs:
        if path is None or str(path) == "":
            continue
        source = Path(path).expanduser().resolve()
        if _within(source, target) or _within(target, source):
            how = ("is" if source == target else "contains" if _within(source, target) else "lies inside")
            raise OutputError(f"{what} {out} {how} the {label} {path}; writing it would change that input",
                              f"choose another {what} outside {path}")


@contextlib.contextmanager
def atomic_dir(out: Path, overwrite: bool = False, inputs: Inputs = ()) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; on success rename it to ``out``, else delete it.

    Nothing half-written is ever left at ``out``: a failure (or Ctrl-C, or SIGTERM, which the CLI turns into
    Ctrl-C) inside the block removes the temporary directory, and an existing ``out`` is only replaced once the
    new one is complete. Temporary folders of earlier runs whose process is gone (killed hard) are removed.
    ``inputs`` are checked again as in :func:`check_output_dir`.
    """
    check_output_dir(out, overwrite, inputs)
    out = out.resolve()
    created: list[Path] = []
    try:
        created = make_parents(out)
        remove_stale_temp(out)
        tmp = make_temp_beside(out)
    except OSError as err:
        remove_created(created)
        raise OutputError(f"cannot write to {out}: {err.strerror}", "choose a writable directory") from err
    try:
        yield tmp
        _normalise_permissions(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_created(created)
        raise


def _normalise_permissions(folder: Path) -> None:
    # mkdtemp makes 0700 and some writers make 0600 files; the output should look like any folder the
    # user makes, so apply the process umask as a normal mkdir/open would.
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


# The libraries whose release can change a result (the kernels package: what --kernels swaps in).
RESULT_LIBRARIES = ("transformers", "accelerate", "peft", "datasets", "lm_eval", "safetensors", "gguf", "kernels")


def versions() -> dict[str, str]:
    """Versions of shortllm, torch, Python and the installed libraries that shape its results
    (:data:`RESULT_LIBRARIES`; a library that is not installed is left out), read from the installed
    metadata without importing them."""
    from importlib import metadata

    import torch

    found = {"shortllm": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in RESULT_LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def prune_options(req: Any, report: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """The ``options`` a prune manifest records, for every output format (``req`` is a ``PruneRequest``);
    ``extra`` adds the format's own options."""
    from dataclasses import asdict

    return {"blocks": req.blocks, "ratio": req.ratio, "num_blocks": req.num_blocks,
            "scores_dir": str(req.scores_dir) if req.scores_dir else None,
            "scoring": asdict(req.scoring) if report and not req.scores_dir else None,
            **asdict(req.settings), "overwrite": req.overwrite,
            "keep_attention_pattern": req.keep_attention_pattern, **extra}


def write_manifest(folder: Path, verb: str, options: dict[str, Any], source: dict[str, Any],
                   results: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    """Write ``shortllm.json`` (how the folder was made and what came out). Returns the manifest."""
    manifest = {
        "verb": verb,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": options,
        "source": source,
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "results": results,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def save_model(model: Any, tokenizer: Any, folder: Path, max_shard_size: str | int | None = None) -> None:
    """Save model (safetensors; shards of at most ``max_shard_size``, e.g. ``"5GB"``, default transformers'),
    tokenizer and generation config into ``folder``."""
    extra = {"max_shard_size": max_shard_size} if max_shard_size is not None else {}
    model.save_pretrained(folder, safe_serialization=True, **extra)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def verify_reload(folder: Path, model: Any, tokens: int = 8, atol: float = 1e-5) -> float:
    """Reload ``folder`` with stock transformers and compare logits with ``model`` on a few tokens.

    Returns:
        The largest absolute logit difference.

    Raises:
        ShortLLMError: if the reloaded model disagrees.
    """
    import torch

    from shortllm.models.loading import from_pretrained_strict

    device = next(model.parameters()).device
    attn = getattr(model.config, "_attn_implementation", None)
    reloaded = from_pretrained_strict(str(folder), str(folder), dtype=model.dtype, attn_implementation=attn,
                                      kernels=bool(getattr(model, "use_kernels", False)))
    reloaded.to(device).eval()
    vocab = model.config.get_text_config().vocab_size
    ids = torch.arange(1, tokens + 1, device=device).remainder(vocab).unsqueeze(0)
    with torch.no_grad():
        a = model(ids, use_cache=False).logits.float()
        b = reloaded(ids, use_cache=False).logits.float()
    diff = (a - b).abs().max().item()
    scale = max(1.0, a.abs().max().item())
    if diff > atol * scale:
        raise ShortLLMError(
            f"the saved model in {folder} does not reproduce the pruned model (max logit diff {diff:.3g})",
            "please report this with SHORTLLM_DEBUG=1 output",
        )
    return diff


def card(title: str, body: str, command: str, *, tags: list[str], base_model: str | None = None,
         library_name: str = "transformers", footer: str = "") -> str:
    """A model card ``README.md``: Hub metadata, a title, the body, the command that made the folder, a footer.

    Args:
        title: the heading (the folder's name).
        body: Markdown paragraphs and tables, ending with a blank line.
        command: the shortllm command line, shown verbatim.
        tags: the card's ``tags``.
        base_model: a hub id, written as ``base_model``; leave None when the model does not descend from a hub
            model (a local path is not a valid ``base_model``, and the Hub rejects the card).
        library_name: ``transformers`` for a full checkpoint, ``peft`` for an adapter.
        footer: a closing paragraph.

    Returns:
        The card's text (YAML front matter between ``---`` lines, then Markdown).
    """
    tag_lines = "".join(f"- {tag}\n" for tag in tags)
    base = f"base_model: {base_model}\n" if base_model else ""
    return (f"---\nlibrary_name: {library_name}\ntags:\n{tag_lines}{base}---\n\n# {title}\n\n{body}"
            f"Made with:\n\n```\n{command}\n```\n" + (f"\n{footer}" if footer else ""))


def model_card(name: str, source_spec: str, removed: list[int], kept: list[int], num_blocks: int,
               params_before: int, params_after: int, how: str, command: str,
               base_model: str | None = None) -> str:
    """A model card README.md for a pruned model (see :func:`card`).

    Args:
        source_spec: how the source model is named (its hub id or absolute path).
        base_model: the source's hub id, written as the card's ``base_model`` metadata; left out when the
            source is not known to be a hub model (a local path is not a valid ``base_model``).
    """
    ratio = 1 - params_after / params_before
    body = f"""Depth-pruned from `{source_spec}` with [shortllm](https://pypi.org/project/shortllm/): {len(removed)} of
{num_blocks} transformer blocks removed ({how}). It is a plain Hugging Face checkpoint: load it with
`AutoModelForCausalLM.from_pretrained` — no custom code.

| | before | after |
|---|---:|---:|
| blocks | {num_blocks} | {len(kept)} |
| parameters | {params_before:,} | {params_after:,} |
| parameters removed | | {params_before - params_after:,} ({ratio:.2%}) |

- Removed blocks (original indices): {', '.join(map(str, removed))}
- Kept blocks (new index -> original index): {', '.join(f'{i}->{o}' for i, o in enumerate(kept))}

"""
    footer = """The model has not been retrained after pruning unless stated elsewhere; expect lower quality than the
original until it is healed (`shortllm retrain`). See `shortllm.json` for the full provenance.
"""
    return card(name, body, command, tags=["shortllm", "depth-pruning"], base_model=base_model, footer=footer)
