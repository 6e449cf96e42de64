"""Errors that reach the user.

Every error qconv raises on purpose is a :class:`QconvError`: it carries a one-line message that
names the file, flag, tensor or node at fault, and a hint that says what to do next. The CLI maps
them to exit codes; anything else is a bug and exits 1 with a traceback under ``--debug``.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), or its type name.

    Libraries (onnx, onnxruntime) put a whole report in one exception; a qconv error quotes
    only its first line.
    """
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class QconvError(Exception):
    """Base of all deliberate qconv errors.

    Attributes:
        message: What is wrong, naming the object at fault.
        hint: What the user can do about it (may be empty).
        exit_code: The process exit code the CLI uses for this error.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint joined into the single line the CLI prints."""
        return f"{self.message}; {self.hint}" if self.hint else self.message


class InputError(QconvError):
    """Bad usage or bad input: the user can fix it. Exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    """An option or option combination that cannot work."""


class ModelError(InputError):
    """The input model cannot be read, is invalid, or uses something qconv cannot handle."""


class DataError(InputError):
    """Calibration or evaluation data that does not fit the model."""


class OutputError(InputError):
    """The output cannot be written where the user asked."""


def cannot_read(path: object, exc: OSError) -> InputError:
    """The one-line error for an input the operating system will not let qconv read."""
    return InputError(
        f"cannot read {path}: {exc.strerror or first_line(exc)}",
        "check the path and its permissions",
    )


class VerificationError(QconvError):
    """The model qconv produced failed its own checks: a bug in qconv. Exit code 1."""
