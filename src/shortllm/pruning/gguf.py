"""The prune job for GGUF outputs: choose blocks (scoring the dequantized model if asked), guard llama.cpp's
index-derived patterns, and write a GGUF whose kept tensors are the source's quantized bytes.

Output layout (docs/gguf.md): ``--out pruned.gguf`` writes the file ``pruned.gguf`` and, beside it,
``pruned.shortllm.json`` (the manifest) and ``pruned.README.md`` (the model card), so several pruned GGUFs can
share a folder and llama.cpp / Ollama / LM Studio take the file as is; ``--format gguf --out DIR`` writes the
folder ``DIR`` holding ``model.gguf``, ``shortllm.json`` and ``README.md``, like every other shortllm output.
Both are written atomically (a temporary folder beside the output, renamed at the end), refuse an existing
output without ``--overwrite`` and any overlap with an input; the input GGUF is only read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from shortllm.errors import ModelLoadError, OutputError
from shortllm.formats.gguf import GGUFSource, open_gguf, param_count, write_pruned_gguf
from shortllm.formats.gguf_layout import metadata_changes, renumbered
from shortllm.models.demo import DEMO_ALIAS, find_demo_gguf
from shortllm.pruning.export import (atomic_dir, card, check_no_overlap, check_output_dir, prune_options,
                                     write_manifest)
from shortllm.pruning.pattern import check_pattern, pattern_record, rules_for_gguf
from shortllm.pruning.plan import plan_from_blocks
from shortllm.tempdirs import make_parents, make_temp_beside, remove_created, remove_stale_temp

log = logging.getLogger(__name__)

MODEL_FILE = "model.gguf"
_PHASE = {"phase": True}


def output_paths(out: Path) -> tuple[Path, Path, Path] | None:
    """(GGUF, manifest, card) of the file layout (``--out X.gguf``); None for the folder layout."""
    if out.suffix.lower() != ".gguf":
        return None
    return out, out.with_name(out.stem + ".shortllm.json"), out.with_name(out.stem + ".README.md")


def check_gguf_output(out: Path, overwrite: bool, inputs: list[tuple[str, Any]]) -> None:
    """Refuse an output that cannot be written, before any slow work (both layouts).

    Raises:
        OutputError: an existing output without ``--overwrite``, a folder where the file goes, an overlap with
            an input, an unwritable parent.
    """
    files = output_paths(out)
    if files is None:
        check_output_dir(out, overwrite, inputs)
        return
    for path in files:
        check_no_overlap(path, inputs)
        if path.is_dir():
            raise OutputError(f"--out {out}: {path} is a directory", "choose another file name")
        if path.exists() and not overwrite:
            raise OutputError(f"{path} already exists", "choose another --out or pass --overwrite")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {out}: {parent} is not writable", "choose a writable directory")


def gguf_fingerprint(source: GGUFSource) -> str:
    """A short identity of a GGUF: its metadata and tensor table (names, types, shapes), not its bytes."""
    h = hashlib.sha256(json.dumps(source.metadata, sort_keys=True, default=str).encode())
    for t in source.reader.tensors:
        h.update(f"{t.name}:{t.tensor_type.name}:{list(map(int, t.shape))}:{int(t.n_bytes)}".encode())
    return h.hexdigest()[:16]


def verify_copy(source: GGUFSource, written: Path, keep: list[int]) -> int:
    """Re-read ``written`` and check that each tensor is the renumbered source tensor, byte for byte, of the
    same type and shape, and that the block count is ``len(keep)``. Returns the number of tensors checked.

    Raises:
        OutputError: any difference (names the tensor).
    """
    import numpy as np

    result = open_gguf(written)
    index = {old: new for new, old in enumerate(keep)}
    expected = {renumbered(t.name, index): t for t in source.reader.tensors}
    expected.pop(None, None)
    got = {t.name: t for t in result.reader.tensors}
    if result.num_blocks != len(keep) or set(got) != set(expected):
        raise OutputError(f"the written GGUF {written} does not hold the expected tensors",
                          "please report this with SHORTLLM_DEBUG=1 output")
    for name, t in got.items():
        src = expected[name]
        if (t.tensor_type != src.tensor_type or list(t.shape) != list(src.shape)
                or not np.array_equal(_raw(t.data), _raw(src.data))):
            raise OutputError(f"tensor {name} of the written GGUF differs from {src.name} of the source",
                              "please report this with SHORTLLM_DEBUG=1 output")
    return len(got)


def _raw(data: Any) -> Any:
    return data.reshape(-1).view("uint8")


def prune_gguf(req: Any, progress: Any) -> Any:
    """Run ``shortllm prune`` with a GGUF output (``req`` is a :class:`~shortllm.pruning.run.PruneRequest`).

    ``--blocks`` needs no dequantizing at all; ``--ratio``/``--num-blocks`` score the dequantized model (the
    cached conversion every ``.gguf`` model spec uses) or read ``--scores``. Then llama.cpp's index-derived
    roles are checked (refused by name if the cut moves them, unless ``--keep-attention-pattern`` chose the
    blocks), and the GGUF is written by copying bytes.

    Raises:
        ShortLLMError: bad input (before slow work where possible), a cut the metadata cannot state, a failed
            byte check of the written file.
    """
    from shortllm.models.loading import fingerprint as model_fingerprint
    from shortllm.models.loading import load_config, resolve_source
    from shortllm.pruning.request import PruneResult
    from shortllm.pruning.select import brief_report, check_mode, select_blocks
    from shortllm.scoring.options import check_options

    t0 = time.perf_counter()
    check_mode(req)
    # the embedded model ships as a Q4_1 GGUF: its GGUF output starts from that file
    spec = find_demo_gguf() if req.model in (None, DEMO_ALIAS) else Path(req.model).expanduser()
    if spec.suffix.lower() == ".gguf" and not spec.exists():
        raise ModelLoadError(f"no such GGUF file: {req.model}", "check the path")
    if spec.suffix.lower() != ".gguf" or not spec.is_file():
        raise ModelLoadError(
            f"a GGUF output is written from a GGUF model, and {req.model} is not a .gguf file",
            "pass -m model.gguf, or write a Hugging Face folder (--format hf) and convert it with llama.cpp's "
            "convert_hf_to_gguf.py")
    if getattr(req, "replace", None) is not None:
        raise OutputError("--replace changes the kept blocks' weights, and a GGUF output copies them unchanged",
                          "write a Hugging Face folder (--format hf) and convert it with llama.cpp")
    if req.blocks is None and req.scores_dir is None:
        check_options(req.scoring)  # the criterion and its values, before anything loads
    inputs = _inputs(req, spec)
    if not req.dry_run:
        if req.out is None:
            raise OutputError("--out is required", "give an output file ending in .gguf, or --dry-run")
        check_gguf_output(req.out, req.overwrite, inputs)
    source = open_gguf(spec)
    counts = param_count(source)
    n = source.num_blocks
    rules = rules_for_gguf(source.arch, source.metadata)
    fingerprint = gguf_fingerprint(source)

    def dequantized_fingerprint() -> str:  # a --scores report was made on the cached dequantized conversion
        converted = resolve_source(req.model, req.settings.revision)
        return model_fingerprint(converted, load_config(converted))

    removed, how, report = select_blocks(req, counts, rules, progress, dequantized_fingerprint,
                                         scored=" (the dequantized model)")[:3]  # the scored model is freed
    plan = plan_from_blocks(counts, removed)
    check_pattern(plan.removed, n, rules, what=f"the pruned '{source.arch}' GGUF")
    metadata_changes(source.arch, source.metadata, plan.kept, n)  # refuses an unstatable cut, also on --dry-run
    result = PruneResult(
        model=str(spec.resolve()), fingerprint=fingerprint, plan=plan, removed_original=plan.removed,
        kept_original=plan.kept, how=how, requested_ratio=req.ratio, scores=brief_report(report),
        patterns=pattern_record(plan.removed, n, rules, guarded=True, output="gguf"), out_format="gguf",
        surgery="GGUF byte-copy",
    )
    result.timings["plan"] = time.perf_counter() - t0
    if req.dry_run:
        return result
    files = output_paths(req.out)
    t1 = time.perf_counter()
    with _staging(req.out, files, req.overwrite, inputs) as tmp:
        log.info("Writing the pruned GGUF to %s (copying quantized tensors)", req.out, extra=_PHASE)
        summary = write_pruned_gguf(source, tmp / MODEL_FILE, plan.kept)
        result.timings["save"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        log.info("Checking the written GGUF tensor by tensor against the source", extra=_PHASE)
        checked = verify_copy(source, tmp / MODEL_FILE, plan.kept)
        result.timings["verify"] = time.perf_counter() - t2
        result.written = {"tensors": summary.tensors_kept, "tensors_dropped": summary.tensors_dropped,
                          "bytes": summary.bytes_copied, "metadata_changed": summary.metadata_changed,
                          "byte_identical_tensors": checked,
                          "tensor_types": sorted({t.tensor_type.name for t in source.reader.tensors})}
        result.out = str(req.out)
        (tmp / "README.md").write_text(_card(req, source, result))
        result.timings["total"] = time.perf_counter() - t0
        write_manifest(
            tmp, "prune",
            options=prune_options(req, report, format="gguf"),
            source={"spec": str(spec.resolve()), "given": req.model, "kind": "gguf", "path": str(spec.resolve()),
                    "arch": source.arch, "fingerprint": fingerprint},
            results=result.as_dict(), timings=result.timings,
        )
    return result


def _inputs(req: Any, spec: Path) -> list[tuple[str, Any]]:
    from shortllm.pruning.request import prune_inputs

    found = prune_inputs(req)  # the .gguf itself and its cached dequantized conversion, --scores, data
    return found if any(Path(p).resolve() == spec.resolve() for _, p in found if p) else found + [("input GGUF", spec)]


class _staging:
    """A temporary folder beside the output; on success its files become the output (both layouts)."""

    def __init__(self, out: Path, files: tuple[Path, Path, Path] | None, overwrite: bool,
                 inputs: list[tuple[str, Any]]):
        self.out, self.files, self.overwrite, self.inputs = out, files, overwrite, inputs
        self._folder: Any = None

    def __enter__(self) -> Path:
        if self.files is None:
            self._folder = atomic_dir(self.out, self.overwrite, self.inputs)
            return self._folder.__enter__()
        check_gguf_output(self.out, self.overwrite, self.inputs)
        target = self.out.resolve()
        self.created = make_parents(target)
        try:
            remove_stale_temp(target)
            self.tmp = make_temp_beside(target)
        except BaseException:
            remove_created(self.created)
            raise
        return self.tmp

    def __exit__(self, kind: Any, value: Any, trace: Any) -> bool:
        if self._folder is not None:
            return bool(self._folder.__exit__(kind, value, trace))
        try:
            if kind is None:
                gguf, manifest, readme = (p.resolve() for p in self.files)
                umask = os.umask(0)
                os.umask(umask)
                for name, dest in ((MODEL_FILE, gguf), ("shortllm.json", manifest), ("README.md", readme)):
                    (self.tmp / name).chmod(0o666 & ~umask)
                    os.replace(self.tmp / name, dest)  # the GGUF first: a manifest never describes a missing file
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if kind is not None:
                remove_created(self.created)
        return False


def _card(req: Any, source: GGUFSource, result: Any) -> str:
    plan = result.plan
    record = result.patterns
    rules = "; ".join(r["rule"] for r in record["rules"]) or f"none for '{source.arch}'"
    body = f"""Depth-pruned from `{source.path.name}` with [shortllm](https://pypi.org/project/shortllm/): {len(plan.removed)}
of {plan.num_blocks} transformer blocks removed ({result.how}). It is a GGUF for llama.cpp, Ollama and LM Studio:
every kept tensor is the source's quantized data, byte for byte ({', '.join(result.written['tensor_types'])});
nothing was dequantized or re-quantized.

| | before | after |
|---|---:|---:|
| blocks | {plan.num_blocks} | {len(plan.kept)} |
| parameters | {plan.params_before:,} | {plan.params_after:,} |
| parameters removed | | {plan.params_before - plan.params_after:,} ({plan.achieved_ratio:.2%}) |

- Removed blocks: {', '.join(map(str, plan.removed))}
- Kept blocks (new index -> original index): {', '.join(f'{i}->{o}' for i, o in enumerate(plan.kept))}
- llama.cpp attention patterns checked (by block index): {rules} -- every kept block keeps its role.

"""
    footer = ("The model has not been retrained after pruning; expect lower quality than the original. "
              "See the manifest (`shortllm.json`) for the full provenance.\n")
    return card(Path(req.out).stem, body, req.command, tags=["shortllm", "depth-pruning", "gguf"],
                library_name="gguf", footer=footer)
