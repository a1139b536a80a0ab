"""One line per error, in real processes: what a user sees on stderr, piped or on a terminal, and how soon.

CliRunner is neither a separate process nor a terminal, so these tests run ``python -m shortllm`` itself: with
stderr piped (CI, nohup), and under a pseudo-terminal whose screen is rebuilt from the bytes written, so that a
progress display that leaves a blank line behind, or a library that prints before the error, is seen as a user
would see it. The hub is made unreachable by pointing ``HF_ENDPOINT`` at a closed local port, with empty caches.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "datasets", "lm_eval", "huggingface_hub", "numpy")
UNKNOWN_TASK = ("error: unknown task 'nosuchtask' (the paper's: boolq, piqa, hellaswag, winogrande, arc_easy, "
                "arc_challenge, openbookqa; or any lm-eval task: `lm-eval ls tasks`). Check the spelling, or pass "
                "--include-path for your own task YAML.")
TWO_SELECTORS = "error: give exactly one of --blocks, --ratio, --num-blocks (got --blocks, --ratio). E.g. --ratio 0.2."


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """The environment of a new user: no network (a closed local port as the hub), empty caches, no debug."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_", "DATASETS_", "TQDM_", "SHORTLLM_DEBUG", "SHORTLLM_DATA"))
           and k.lower() not in ("https_proxy", "http_proxy", "all_proxy")}
    # Off a terminal a step that runs 10 s prints a progress line; on a busy machine even an error can take that.
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf-home"), COLUMNS="200",
               SHORTLLM_HEARTBEAT_S="3600")
    return env


def shortllm(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m shortllm ARGS`` with stdout and stderr piped."""
    return subprocess.run([sys.executable, "-m", "shortllm", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def assert_only(result: subprocess.CompletedProcess, line: str) -> None:
    """Exit code 2 and stderr exactly ``line``: no blank line before it, no library line, no traceback."""
    assert result.returncode == 2, result.stderr
    assert result.stderr == line + "\n", result.stderr


# -- errors piped --------------------------------------------------------------------------------------------


def test_unknown_task_is_one_line_and_fast(env):
    started = time.perf_counter()
    result = shortllm(["eval", "--tasks", "nosuchtask", "--ppl", "none"], env)
    seconds = time.perf_counter() - started
    assert_only(result, UNKNOWN_TASK)
    # lm-eval's task index takes 10-40 s to build; a name no task file mentions is refused without it.
    assert seconds < 20, seconds


def test_a_hub_id_offline_is_one_line(env):
    """It printed 11 retry warnings first (``inspect`` is tried the same way, below and on a terminal)."""
    result = shortllm(["eval", "--tasks", "none", "-m", "someone/model"], env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot load 'someone/model' from the Hugging Face hub"), lines[0]


def test_a_failed_step_is_not_reported_done(env):
    """Progress lines may come first while a step runs, but a step that failed does not end with "done"."""
    result = shortllm(["inspect", "-m", "someone/model"], {**env, "SHORTLLM_HEARTBEAT_S": "0.2"})
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith("error: cannot load 'someone/model'"), lines
    beats = [i for i, line in enumerate(lines) if line.endswith(" so far")]
    assert beats, lines  # the failing step ran more than 0.2 s
    assert lines[beats[-1] + 1:] == [lines[-1]], lines[beats[-1]:]


def test_an_error_inside_a_progress_display_is_one_line(env):
    """prune shows its progress before it checks the selection: nothing of the display may be left behind."""
    assert_only(shortllm(["prune", "--ratio", "0.2", "--blocks", "1", "--dry-run"], env), TWO_SELECTORS)


# -- usage errors: one line, before any heavy import ---------------------------------------------------------

USAGE_SCRIPT = r"""
import contextlib, io, json, sys, time
started = time.perf_counter()
from shortllm.cli.app import main
cases, modules, report = json.loads(sys.argv[1]), json.loads(sys.argv[2]), []
for argv in cases:
    t0, err = time.perf_counter(), io.StringIO()
    sys.argv = ["shortllm", *argv]
    with contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code
    report.append({"argv": argv, "code": code, "stderr": err.getvalue(), "seconds": time.perf_counter() - t0})
heavy = [m for m in modules if m in sys.modules]
print(json.dumps({"cases": report, "heavy": heavy, "total": time.perf_counter() - started}))
"""
USAGE_CASES = [
    (["prune", "--ratioo", "0.2"], "No such option: --ratioo"),
    (["prune", "--ratio", "abc"], "Invalid value for '--ratio' / '-r': Input should be a valid number"),
    (["score", "--samples"], "Option '--samples' requires an argument."),
    (["--quite", "inspect"], "No such option: --quite"),
    (["retrain", "--method", "lora", "--max-stepz", "3"], "No such option: --max-stepz"),
    (["evaluate"], "No such command 'evaluate'."),
]


def test_usage_errors_come_before_heavy_imports(env):
    """A typo in an option is answered at once (it took 5-10 s: transformers was imported before click parsed)."""
    out = subprocess.run([sys.executable, "-c", USAGE_SCRIPT, json.dumps([c for c, _ in USAGE_CASES]),
                          json.dumps(HEAVY)], env=env, capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout)
    assert report["heavy"] == [], report["heavy"]
    for case, (argv, message) in zip(report["cases"], USAGE_CASES):
        assert case["code"] == 2, case
        lines = case["stderr"].splitlines()  # one line, as every other error: the message, then the help to read
        assert len(lines) == 1, case
        assert lines[0].startswith(f"error: {message}"), case
        assert lines[0].endswith("--help'."), case
    # 1.0-1.5 s for all six (0.1 s each after the first) at load average 4-5 on 2 cores, imports included
    assert report["total"] < 4, report


def test_unknown_task_names_are_refused_before_lm_eval_is_imported(env):
    script = ("import sys\nfrom shortllm.errors import DataError\nfrom shortllm.evaluation.lmeval import "
              "check_task_names\ntry:\n    check_task_names(['piqa', 'nosuchtask'], None)\nexcept DataError as e:\n"
              "    print(e.one_line())\nprint('lm_eval' in sys.modules, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.splitlines() == [UNKNOWN_TASK.removeprefix("error: "), "False False"], out.stdout


# -- on a terminal ---------------------------------------------------------------------------------------------

CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen(data: bytes) -> list[str]:
    """The lines a terminal shows after ``data``: text, CR, LF, cursor up (CSI A) and erase line (CSI K) applied."""
    rows: list[list[str]] = [[]]
    row = col = 0
    text = data.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = CSI.match(text, i)
            if m is None:  # other escapes (OSC, charset): skip the ESC
                i += 1
                continue
            params, final = m.group(1), m.group(2)
            if final == "A":
                row = max(0, row - int(params or 1))
            elif final == "K":
                if params in ("", "0"):
                    del rows[row][col:]
                elif params == "2":
                    rows[row] = []
            i = m.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
            while len(rows) <= row:
                rows.append([])
        elif ch >= " ":
            line = rows[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    lines = ["".join(r).rstrip() for r in rows]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, bytes]:
    """Run ``python -m shortllm ARGS`` with stdin, stdout and stderr on one pseudo-terminal (200 columns)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {**env, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", "shortllm", *args], env=env, stdin=follower, stdout=follower,
                            stderr=follower, close_fds=True)
    os.close(follower)
    data, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the other end closed
                    break
                if not chunk:
                    break
                data += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), data


def test_screen_follows_the_terminal():
    assert screen(b"a\r\n\x1b[?25hspin\r\x1b[2Kspin2\r\n\x1b[1A\x1b[2Kerror: x\r\n") == ["a", "error: x"]
    assert screen(b"\r\n\r\nerror: x\r\n") == ["", "", "error: x"]


@pytest.mark.parametrize("args, line", [
    (["prune", "--ratio", "0.2", "--blocks", "1", "--dry-run"], TWO_SELECTORS),
    (["inspect", "-m", "someone/model"], None),
])
def test_on_a_terminal_the_error_is_the_only_line_left(env, args, line):
    code, data = on_a_terminal(args, env)
    shown = screen(data)
    assert code == 2, shown
    assert len(shown) == 1, shown
    if line is not None:
        assert shown == [line]
    else:
        assert shown[0].startswith("error: cannot load 'someone/model'"), shown


# -- in-process: the handler, the log lines, the libraries' switches -------------------------------------------


def _fails_with(err: BaseException):
    from shortllm.cli.app import handle_errors

    def command():
        raise err

    return handle_errors(command)


@pytest.mark.parametrize("err, line", [
    (OSError(28, "No space left on device", "/data/out/model.safetensors"),
     "error: No space left on device: /data/out/model.safetensors. Check the path, its permissions and the free "
     "disk space (SHORTLLM_DEBUG=1 shows the traceback)."),
    (PermissionError(13, "Permission denied", "/srv/models"),
     "error: Permission denied: /srv/models. Check the path, its permissions and the free disk space "
     "(SHORTLLM_DEBUG=1 shows the traceback)."),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 85899345920 bytes.\nError code 12"),
     "error: out of memory ([enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
     "you tried to allocate 85899345920 bytes. Error code 12). Use a smaller --batch-size (or --seq-len, --samples), "
     "--dtype bfloat16, or a device with more memory."),
    (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 2.00 GiB"),
     "error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB). Use a smaller --batch-size (or "
     "--seq-len, --samples), --dtype bfloat16, or a device with more memory."),
])
def test_running_out_of_memory_or_disk_is_one_line(monkeypatch, capsys, err, line):
    import typer

    monkeypatch.delenv("SHORTLLM_DEBUG", raising=False)
    with pytest.raises(typer.Exit) as exit:
        _fails_with(err)()
    assert exit.value.exit_code == 2
    assert capsys.readouterr().err == line + "\n"
    monkeypatch.setenv("SHORTLLM_DEBUG", "1")
    with pytest.raises(type(err)):
        _fails_with(err)()


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv("SHORTLLM_DEBUG", raising=False)
    with pytest.raises(KeyError):
        _fails_with(KeyError("num_hidden_layers"))()


@pytest.fixture
def cli_logging(monkeypatch):
    """Run the CLI's global-option callback in-process, then put logging and warnings back."""
    import logging
    import warnings

    from shortllm.cli import app as cli_app

    names = ("shortllm", "", *cli_app.LIBRARY_LOGGERS)
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    for name in cli_app.LIBRARY_LOG_ENV + cli_app.LIBRARY_BAR_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli_app, "_USER_ENV", frozenset())
    with warnings.catch_warnings():
        yield cli_app.main_options
    for n, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_off_a_terminal_a_warning_is_one_line(cli_logging, capsys):
    import logging

    cli_logging(verbose=0, quiet=False, version=False)
    long = "no tokenizer loaded for /a/very/long/path/" + "x" * 120 + " (the folder has no tokenizer files)"
    logging.getLogger("shortllm.models.loading").warning(long)
    assert capsys.readouterr().err == f"warning: {long}\n"


def test_the_libraries_are_quiet_unless_asked(cli_logging, capsys):
    import logging
    import warnings

    cli_logging(verbose=0, quiet=False, version=False)
    assert os.environ["TQDM_DISABLE"] == os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    logging.getLogger("lm_eval.tasks").warning("lm-eval says something")
    logging.getLogger("some.library").warning("a library says something")
    warnings.warn("a library warns", UserWarning)
    assert capsys.readouterr().err == ""

    cli_logging(verbose=1, quiet=False, version=False)
    assert "TQDM_DISABLE" not in os.environ and os.environ["TRANSFORMERS_VERBOSITY"] == "warning"
    assert logging.getLogger("lm_eval.tasks").isEnabledFor(logging.WARNING)
    with pytest.warns(UserWarning):
        warnings.warn("shown with -v", UserWarning)


VALUE_CASES = [
    (["prune", "--ratio", "-0.1", "--out", "x"], "--ratio -0.1 is outside (0, 1)"),
    (["score", "--ratio", "1.5", "--out", "x"], "--ratio 1.5 is outside (0, 1)"),
    (["score", "--samples", "0", "--out", "x"], "--samples 0 / --seq-len 128 must be positive"),
    (["prune", "--ratio", "0.2", "--seq-len", "1", "--out", "x"], "--samples 10 / --seq-len 1 must be positive"),
    (["score", "--batch-size", "0", "--out", "x"], "--batch-size 0 must be at least 1"),  # was run as "all at once"
    (["score", "-c", "magnitude", "--norm", "3", "--out", "x"], "--norm 3 is not supported"),
    (["score", "--protect-last", "-1", "--out", "x"], "--protect-last -1 must be 0 or more"),
    (["score", "-c", "auto", "--search-tokens", "0", "--out", "x"], "--search-tokens 0 must be at least 1"),
    (["score", "-c", "nosuch", "--out", "x"], "unknown criterion 'nosuch'. Choose one of ppl, taylor,"),
    (["score", "--num-blocks", "2", "--ratio", "0.2", "--out", "x"], "give --num-blocks or --ratio, not both"),
    (["score", "--dtype", "float8", "--out", "x"], "unknown dtype 'float8'"),
    (["prune", "--num-blocks", "0", "--out", "x"], "--num-blocks 0 must be at least 1"),
    (["prune", "--blocks", "3", "--replace", "linear", "--replace-samples", "0", "--out", "x"],
     "--replace-samples 0 must be at least 1"),
    (["prune", "--blocks", "3", "--replace", "block", "--replace-lr", "0", "--out", "x"],
     "--replace-lr 0 must be positive. The default is 0.005."),
    (["prune", "--blocks", "3", "--replace", "nosuch", "--out", "x"], "unknown --replace method 'nosuch'"),
    (["prune", "--blocks", "3", "--max-shard-size", "abc", "--out", "x"], "cannot read the shard size 'abc'"),
    (["prune", "--blocks", "3", "--format", "onnx", "--out", "x"], "unknown --format 'onnx'"),
    (["prune", "--blocks", "3", "--device", "tpu", "--out", "x"], "unknown device 'tpu'"),
    (["retrain", "-M", "cpt", "--lr", "-1", "--out", "x"], "--lr -1 must be a positive number"),
    (["retrain", "-M", "kd", "--kd-alpha", "2", "--out", "x"], "--kd-alpha 2 must be within 0..1"),
    (["bench", "--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["eval", "--dtype", "float8", "--tasks", "none"], "unknown dtype 'float8'"),
    (["eval", "--generate", "hi", "--max-new-tokens", "0", "--ppl", "none", "--tasks", "none"],
     "--max-new-tokens 0 must be at least 1"),  # a 74-line traceback from generate() before
    (["eval", "--generate", " ", "--ppl", "none", "--tasks", "none"], "--generate is empty"),
    (["prune", "--blocks", "3,3", "--out", "x"], "block index 3 is given twice"),  # after the config (8 s) before
    (["prune", "--blocks", "-1", "--out", "x"], "block index -1 is negative"),
    (["run", "cpu-demo", "--out", ""], "Invalid value for '--out' / '-o': --out is empty"),  # ran into . before
    (["score", "--data", "nosuch", "--out", "x"], "unknown dataset 'nosuch' (known: pydoc,"),  # 6-16 s before
    (["score", "--data", "/no/such.txt", "--out", "x"], "no such file or directory: /no/such.txt"),
    (["score", "--text-field", "body", "--out", "x"], "--text-field body does not apply to 'pydoc'"),
    (["retrain", "-M", "cpt", "--eval-data", "nosuch", "--out", "x"], "unknown dataset 'nosuch'"),
    (["score", "--revision", "v2", "--out", "x"], "--revision v2 only applies to hub models, and smollm2-135m is not"),
    (["bench", "-m", "a.gguf", "--revision", "v2"], "--revision v2 only applies to hub models, and a.gguf is not"),
]


def test_bad_values_are_refused_before_heavy_imports(env, tmp_path):
    """A value no model could make valid is refused before torch, transformers or the model's config load
    (it took 10-60 s: the config was read first). --max-shard-size is read by huggingface_hub's own size parser
    (40 ms to import), the one light library allowed here."""
    assert_refused_at_once(VALUE_CASES, env, tmp_path, heavy=[m for m in HEAVY if m != "huggingface_hub"])


def assert_refused_at_once(cases: list, env: dict[str, str], cwd, heavy=HEAVY) -> None:
    """Each ``(argv, message)`` of ``cases``, run in one fresh interpreter in ``cwd``: exit 2, the one line
    ``error: message...``, none of ``heavy`` imported, and nothing written in ``cwd``."""
    out = subprocess.run([sys.executable, "-c", USAGE_SCRIPT, json.dumps([c for c, _ in cases]), json.dumps(heavy)],
                         env=env, capture_output=True, text=True, timeout=120, check=True, cwd=cwd)
    report = json.loads(out.stdout)
    assert report["heavy"] == [], report["heavy"]
    for case, (argv, message) in zip(report["cases"], cases):
        assert case["code"] == 2, case
        assert case["stderr"].splitlines() == [case["stderr"].strip()], case
        assert case["stderr"].startswith(f"error: {message}"), case
    assert list(Path(cwd).iterdir()) == []
