"""The supported-range tooling: lower-bound pins, the recorded sets, the drift report, the docs table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import compat_pins  # noqa: E402
import drift  # noqa: E402


def test_every_dependency_has_a_lower_bound_and_pins_to_it():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "compat_pins.py"), "lower"], capture_output=True,
                         text=True, check=True).stdout.split()
    deps = compat_pins.dependencies()
    assert len(out) == len(deps)
    for line, req in zip(out, deps):
        name, _, version = line.partition("==")
        assert name == compat_pins.name_of(req) and version == compat_pins.lower_bound(req), (line, req)


def test_the_recorded_set_pins_the_libraries_but_not_torch():
    head, pins = compat_pins.read_set(ROOT / "ci" / "constraints.txt")
    assert {"date", "python", "torch", "result", "command"} <= set(head)
    assert "passed" in head["result"] and "failed" not in head["result"]
    for req in compat_pins.dependencies():
        name = compat_pins.name_of(req)
        assert (name in pins) == (name != "torch"), name  # CI installs the machine's own torch build first
    assert not any(n.startswith(("nvidia-", "triton")) for n in pins)


def test_ci_installs_the_recorded_set_with_the_installed_torch():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ('{ cat ci/constraints.txt; echo "torch==$(python -c \'import torch; print(torch.__version__)\')"; } '
            '> "$PINS"') in ci
    assert 'PIP_CONSTRAINT="$ROOT/$PINS" bash -euo pipefail -c "$CMD"' in ci


def _report(path: Path, versions: dict[str, str]) -> Path:
    path.write_text(json.dumps({"install": [{"metadata": {"name": n, "version": v}} for n, v in versions.items()]}))
    return path


def test_drift_names_only_what_differs(tmp_path, capsys, monkeypatch):
    _, pins = compat_pins.read_set(ROOT / "ci" / "constraints.txt")
    same = {**pins, "torch": "9.9", "setuptools": "80", "shortllm": "0.1.0"}  # left out of the comparison
    monkeypatch.setattr(sys, "argv", ["drift.py", str(_report(tmp_path / "same.json", same))])
    drift.main()
    assert capsys.readouterr().out == ""
    moved = {**pins, "transformers": "99.0.0", "newlib": "1.0"}
    del moved["peft"]
    monkeypatch.setattr(sys, "argv", ["drift.py", str(_report(tmp_path / "moved.json", moved))])
    drift.main()
    assert capsys.readouterr().out.splitlines() == [
        "newlib (none) -> 1.0", f"peft {pins['peft']} -> (none)", f"transformers {pins['transformers']} -> 99.0.0"]


def test_the_docs_table_is_the_regenerated_one():
    page = (ROOT / "docs" / "compatibility.md").read_text()
    assert compat_pins.render_table() in page  # run `python scripts/compat_pins.py table` after editing the bounds
