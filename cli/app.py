"""`mtl`: the Typer application. Commands live in one module per group; torch loads lazily."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mtl.cli import device_cmd, evaluate_cmd, export_cmd, meta_cmd, report_cmd, train_cmd
from mtl.cli.errors import fail

try:  # Typer ≥ 0.20 vendors Click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError

app = typer.Typer(name="mtl", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Meta-transfer learning for the edge: pretrain and meta-train on a GPU, adapt to "
                       "new classes on a device.")
app.command("pretrain")(train_cmd.pretrain)
app.command("meta-train")(meta_cmd.meta_train)
app.command("calibrate")(train_cmd.calibrate)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("adapt")(device_cmd.adapt)
app.command("predict")(device_cmd.predict)
app.command("classes")(device_cmd.classes)
app.add_typer(device_cmd.bundle_app, name="bundle")
app.command("export")(export_cmd.export)
app.command("report")(report_cmd.report)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mtl {version('mtl')}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """Meta-transfer learning for the edge."""


def main() -> None:
    """Entry point. Typer's own usage errors (an option that does not parse or is out of its declared range)
    become the same single `error:` line on stderr, exit 2, as every other mistake."""
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `mtl`: the help, as Typer shows it
            exc.show()
            sys.exit(exc.exit_code)
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        code = fail(" ".join(exc.format_message().split()) + where, exc.exit_code).exit_code
    except typer.Abort:
        code = fail("aborted", 1).exit_code
    sys.exit(code if isinstance(code, int) else 0)
