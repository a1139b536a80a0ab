"""The error family of shortllm.

Core code raises these with a message naming the problem and a hint naming the fix; the CLI's
one handler (``cli/app.py``) turns them into one line on stderr and exit code 2.
"""

from __future__ import annotations


def reason(err: BaseException, limit: int = 300) -> str:
    """A library error's whole message on one line: every line of it with whitespace collapsed (a library's
    first line is often only a header, e.g. "Class validation error for validator 'validate_layer_type':"),
    cut at ``limit`` characters; the class name when the error has no message."""
    text = " ".join(str(err).split())
    if not text:
        return type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ShortLLMError(Exception):
    """A failure the user can fix. ``hint`` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as one line for stderr."""
        text = self.message.rstrip(".")
        if self.hint:
            hint = self.hint.rstrip(".")
            text += f". {hint[:1].upper()}{hint[1:]}."
        else:
            text += "."
        return " ".join(text.split())


class ModelLoadError(ShortLLMError):
    """A model spec that cannot be resolved or loaded."""


class UnsupportedArchitectureError(ShortLLMError):
    """A model whose blocks shortllm cannot locate (or an encoder-only model)."""


class BlockSelectionError(ShortLLMError):
    """Bad block indices, ratios or counts."""


class OutputError(ShortLLMError):
    """An output path that cannot be written."""


class DeviceError(ShortLLMError):
    """A device or dtype that is unknown or not available."""


class OptionError(ShortLLMError):
    """An option given for a run that would not read it (cli/applies.py), or options that contradict."""


class DataError(ShortLLMError):
    """Calibration or evaluation data that cannot be found or is too small."""


class TrainingError(ShortLLMError):
    """Bad training options, an unusable checkpoint, or a run that diverged."""


class BenchSettingsError(ShortLLMError):
    """A benchmark sweep that cannot be run (sizes, counts, context length)."""


class RecipeError(ShortLLMError):
    """A recipe (``shortllm run``) that cannot be read, has unknown or mistyped keys, or a stage that failed."""


class Interrupted(ShortLLMError):
    """A run stopped by Ctrl-C or SIGTERM; the message says what was kept on disk (exit code 130)."""

    exit_code = 130
