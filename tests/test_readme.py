"""The README's set-up is right on a CPU-only machine.

Two commands (one runs the main job, one the tests), with the CPU-only torch install directly before them, so a
machine without a GPU never pulls torch's CUDA build; CI runs the test command exactly as the README shows it.
"""

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_cpu_torch_comes_before_the_first_install():
    commands = _commands()
    first_install = next(i for i, c in enumerate(commands) if c.startswith("pip install -e"))
    cpu = [i for i, c in enumerate(commands) if c.startswith("pip install torch")]
    assert cpu and cpu[0] < first_install
    assert "--index-url https://download.pytorch.org/whl/cpu" in commands[cpu[0]]
    # Nothing else comes between: it is the line directly before the set-up commands.
    assert first_install == cpu[0] + 1


def test_set_up_is_two_commands():
    main = [c for c in _commands() if c.startswith("pip install -e . &&")]
    assert main == ["pip install -e . && shortllm prune --ratio 0.2 --out pruned/"]
    test = re.search(r"<!-- test-command -->\n```bash\n(.*?)```\n<!-- /test-command -->", README, flags=re.S)
    assert test.group(1).strip() == 'pip install -e ".[dev]" && python -m pytest -q -n 2'


def test_gpu_machines_are_told_what_to_do():
    assert re.search(r"GPU machine, skip that line", README)
