"""Turn user mistakes into one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mtl.pipeline.errors import MtlError

F = TypeVar("F", bound=Callable[..., Any])
stderr = Console(stderr=True)


MAX_MESSAGE = 1000  # characters: a message quoting hostile input (a 1 MB string in a manifest) stays readable


def one_line(text: str, limit: int | None = None) -> str:
    """`text` on one line: control characters (a newline in a folder name) written as escapes, e.g. \\n;
    with `limit`, cut to that many characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr, as ONE line, and return the Exit to raise. The message is escaped: it
    names user files and classes, and a folder named "[red]cats" must be printed as it is, not as markup."""
    stderr.print(f"[bold red]error:[/] {escape(one_line(message, MAX_MESSAGE))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(command: F) -> F:
    """Decorator for command bodies: MtlError → exit 1 (runtime) or 2 (usage); Ctrl-C → exit 130.

    Every file mtl writes is renamed into place whole, so an interrupt leaves the last saved version;
    for a training command (one with `out` and `resume`) the message says where it is and how to go on.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MtlError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail(_interrupted(kwargs), 130) from None
        except ModuleNotFoundError as exc:
            if exc.name in {"torch", "torchvision", "safetensors", "onnx", "onnxscript", "matplotlib"}:
                raise fail(f"this command needs the training extra ({exc.name} is not installed): "
                           "pip install 'mtl[train]'") from None
            raise
        except OSError as exc:  # the machine, not mtl: a full disk, a read-only or vanished path
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}") from None

    return wrapper  # type: ignore[return-value]


def _interrupted(kwargs: dict[str, Any]) -> str:
    if "resume" not in kwargs or kwargs.get("out") is None:
        return "interrupted; files written so far are complete, nothing is half-written"
    last = Path(kwargs["out"]) / "last.safetensors"
    if not last.is_file():
        return f"interrupted before the first checkpoint; nothing to resume in {kwargs['out']}"
    return f"interrupted; {last} holds the last saved state, continue with the same options and --resume"
