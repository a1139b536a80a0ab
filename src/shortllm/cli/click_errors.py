"""Click's own errors (unknown verb or option, a value of the wrong type, a missing value) as the one line every
other error prints, and the click that typer parses with."""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from typing import Any

from typer.core import TyperGroup


_PROPAGATE = contextvars.ContextVar("shortllm_errors_propagate", default=False)


@contextlib.contextmanager
def errors_propagate() -> Iterator[None]:
    """Within the block the CLI's error handler (``app.handle_errors``) lets every error through unchanged: for
    callers that run a verb's command and handle its errors themselves (the recipe runner)."""
    token = _PROPAGATE.set(True)
    try:
        yield
    finally:
        _PROPAGATE.reset(token)


def errors_propagating() -> bool:
    """Whether :func:`errors_propagate` is in force."""
    return _PROPAGATE.get()


def click_module() -> Any:
    """The click exception classes typer parses with (``ClickException``, ``UsageError``, ``Abort``): recent
    typer releases carry their own copy of click (``typer._click``, with ``Abort`` in ``typer.exceptions``),
    earlier ones use the ``click`` package."""
    from types import SimpleNamespace

    try:
        from typer._click.exceptions import ClickException, UsageError
        from typer.exceptions import Abort
    except ImportError:
        from click.exceptions import Abort, ClickException, UsageError
    return SimpleNamespace(ClickException=ClickException, UsageError=UsageError, Abort=Abort)


def one_line(err: Any, fallback_path: str) -> str:
    """``<click's message>. Try 'shortllm VERB --help'.`` for a ClickException (``fallback_path`` names the
    command when click's error carries no context, as for an option given without its value)."""
    text = " ".join(err.format_message().split()).rstrip(".")
    text += "" if text.endswith(("?", "!")) else "."
    ctx = getattr(err, "ctx", None)
    return text + f" Try '{ctx.command_path if ctx is not None else fallback_path} --help'."


class OneLineErrors(TyperGroup):
    """The ``shortllm`` group: in standalone mode (the console script, CliRunner) a usage error is
    ``error: <message>. Try 'shortllm VERB --help'.`` on stderr, exit 2, instead of click's Usage / Try /
    Error block. Help shown for a bare ``shortllm`` stays click's."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        click = click_module()
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.Abort:
            sys.stderr.write("aborted\n")
            sys.exit(1)
        except click.ClickException as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # `shortllm` alone: the help, as click shows it
                err.show()
            else:
                argv = kwargs.get("args") or (args[0] if args else None) or sys.argv[1:]
                verb = next((a for a in argv if a in self.commands), None)
                path = " ".join(filter(None, [kwargs.get("prog_name") or self.name or "shortllm", verb]))
                sys.stderr.write(f"error: {one_line(err, path)}\n")
            sys.exit(err.exit_code)
        # Without standalone mode click returns the code of a typer.Exit, or the verb's return value (None).
        sys.exit(code if isinstance(code, int) else 0)
