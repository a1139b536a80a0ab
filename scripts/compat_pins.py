"""Pins for the dependency-range check (scripts/compat.sh).

    python scripts/compat_pins.py lower          every runtime dependency at its pyproject.toml lower bound
    python scripts/compat_pins.py table          regenerate docs/compatibility.md's table from ci/*.txt

``lower`` prints ``name==X`` for each ``name>=X`` in ``[project] dependencies`` (the oldest end of the
supported range); ``table`` reads ``ci/oldest.txt`` and ``ci/constraints.txt`` (the exact sets the oldest
and newest runs passed with) and rewrites the table between the markers in docs/compatibility.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*)$")


def dependencies() -> list[str]:
    """The ``[project] dependencies`` strings of pyproject.toml (read without tomllib on Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    if tomllib is not None:
        return list(tomllib.loads(text)["project"]["dependencies"])
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M).group(1)
    return re.findall(r'"([^"]+)"', block)


def name_of(req: str) -> str:
    return re.sub(r"[-_.]+", "-", REQ.match(req).group(1)).lower()


def lower_bound(req: str) -> str | None:
    found = re.search(r">=\s*([0-9][^,;\s]*)", req)
    return found.group(1) if found else None


def lower() -> None:
    for req in dependencies():
        bound = lower_bound(req)
        if bound is None:
            sys.exit(f"{req}: no lower bound in pyproject.toml; every dependency needs one")
        print(f"{name_of(req)}=={bound}")


def read_set(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(header fields from '# key: value' lines, {name: version}) of a recorded set."""
    head, pins = {}, {}
    if not path.is_file():
        return head, pins
    for line in path.read_text().splitlines():
        if line.startswith("#") and ":" in line:
            key, _, value = line[1:].partition(":")
            head[key.strip()] = value.strip()
        elif "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name.strip()).lower()] = version.strip()
    return head, pins


def render_table() -> str:
    """The markdown table (and the runs' notes) of the tested range, from ``ci/oldest.txt``,
    ``ci/constraints.txt`` and pyproject.toml."""
    old_head, old = read_set(ROOT / "ci" / "oldest.txt")
    new_head, new = read_set(ROOT / "ci" / "constraints.txt")
    rows = ["| library | required | oldest tested | newest tested |", "|---|---|---:|---:|",
            f"| python | `{python_requirement()}` | {old_head.get('python', '-')} | {new_head.get('python', '-')} |"]
    for req in dependencies():
        name = name_of(req)
        spec = req[len(REQ.match(req).group(1)):].strip()
        # Torch is kept out of the pins (CI installs the machine's own build); its header records the version.
        low, high = (old_head.get("torch"), new_head.get("torch")) if name == "torch" else (old.get(name), new.get(name))
        rows.append(f"| {name} | `{spec}` | {low or '-'} | {high or '-'} |")
    notes = [f"- {label} run: {head.get('date', '?')}, {head.get('result', '?')} "
             f"(`{head.get('command', 'scripts/compat.sh ' + label)}`)"
             for label, head in (("oldest", old_head), ("newest", new_head)) if head]
    return "\n".join(rows) + "\n\n" + "\n".join(notes)


def table() -> None:
    """Rewrite the table between the markers of docs/compatibility.md from the recorded sets."""
    page = ROOT / "docs" / "compatibility.md"
    start, end = "<!-- compat-table -->", "<!-- /compat-table -->"
    text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{render_table()}\n{end}",
                  page.read_text(), flags=re.S)
    page.write_text(text)


def python_requirement() -> str:
    found = re.search(r'^requires-python\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    return found.group(1) if found else ""


if __name__ == "__main__":
    {"lower": lower, "table": table}[sys.argv[1] if len(sys.argv) > 1 else ""]()
