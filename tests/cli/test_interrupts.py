"""Every way a run can stop leaves nothing half-written.

SIGTERM (what batch schedulers and containers send) and SIGHUP (a closed terminal) unwind like Ctrl-C: the temporary folder beside --out is
removed and the message says nothing was written. A run killed hard (SIGKILL) cannot clean up, so the next
write of the same --out removes temporary folders whose process is gone, and leaves those of live processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import tree_digest


def _script(body: str) -> str:
    return textwrap.dedent(body)


@pytest.mark.parametrize(("signame", "exit_code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_signal_during_prune_save_leaves_no_temp_folder(tiny_llama_dir, tmp_path, signame, exit_code):
    # SIGHUP: the terminal or ssh session of the run was closed.
    out = tmp_path / "outputs" / "pruned"
    # The real entry point, with the save patched to write a partial file and then receive the signal
    # (--blocks: out-of-core surgery, which writes the weights file by file).
    code = _script(f"""
        import os, signal, sys
        import shortllm.models.checkpoint as checkpoint

        def save(path, items, metadata):
            path.write_bytes(b"partial")
            os.kill(os.getpid(), signal.{signame})

        checkpoint.write_safetensors = save
        sys.argv = ["shortllm", "prune", "-m", {str(tiny_llama_dir)!r}, "--blocks", "1", "--device", "cpu",
                    "--out", {str(out)!r}]
        from shortllm.cli.app import main
        main()
    """)
    before = tree_digest(tiny_llama_dir)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == exit_code, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"interrupted ({signame}); nothing was written"
    assert not out.parent.exists()  # neither a temporary folder nor the folder the run made for its output
    assert tree_digest(tiny_llama_dir) == before


def test_stale_temp_folders_of_dead_processes_are_removed(tiny_llama_dir, tmp_path):
    parent = tmp_path / "outputs"
    parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = parent / f".pruned.tmp-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    old = parent / f".pruned.old-{dead.pid}"
    old.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        busy = parent / f".pruned.tmp-{alive.pid}-def456"  # a concurrent run: not ours to remove
        busy.mkdir()
        other = parent / f".other.tmp-{dead.pid}-x"  # another output's temp folder: left alone
        other.mkdir()
        code = _script(f"""
            import sys
            sys.argv = ["shortllm", "prune", "-m", {str(tiny_llama_dir)!r}, "--blocks", "1", "--device", "cpu",
                        "--out", {str(parent / "pruned")!r}]
            from shortllm.cli.app import main
            main()
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in parent.iterdir()) == sorted([busy.name, other.name, "pruned"])
    finally:
        alive.kill()
        alive.wait()


def test_sigterm_is_handled_like_ctrl_c_in_process(tiny_llama_dir, tmp_path, monkeypatch):
    from shortllm.cli import app as app_module
    from tests.conftest import run_cli

    previous = signal.getsignal(signal.SIGTERM)
    app_module.install_signal_handlers()
    import shortllm.models.checkpoint as checkpoint

    def save(path: Path, items, metadata):  # --blocks: out-of-core surgery writes the weights file by file
        path.write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(checkpoint, "write_safetensors", save)
    try:
        result = run_cli("prune", "-m", tiny_llama_dir, "--blocks", "1", "--device", "cpu", "--out",
                         tmp_path / "o" / "p")
    finally:
        signal.signal(signal.SIGTERM, previous)
        app_module._received.clear()
    assert result.exit_code == 143
    assert "interrupted (SIGTERM)" in result.stderr
    assert not (tmp_path / "o").exists()  # the folder the run made for its output is gone too
