"""`mtl`: the Typer application. Commands live in one module per group; torch loads lazily."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import device_cmd, evaluate_cmd, export_cmd, meta_cmd, train_cmd

app = typer.Typer(name="mtl", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Meta-transfer learning for the edge: pretrain and meta-train on a GPU, adapt to "
                       "new classes on a device.")
app.command("pretrain")(train_cmd.pretrain)
app.command("meta-train")(meta_cmd.meta_train)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("adapt")(device_cmd.adapt)
app.command("predict")(device_cmd.predict)
app.add_typer(device_cmd.bundle_app, name="bundle")
app.command("export")(export_cmd.export)


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
    app()
