"""Option types shared by several commands."""

from __future__ import annotations

from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated

import typer


class DeviceChoice(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DataOpt = Annotated[str | None, typer.Option("--data", help="Data spec: omniglot:PATH, folder:PATH, "
                                             "synthetic[:N], cifar-fs:PATH, fc100:PATH, mini-imagenet:PATH.")]
DeviceOpt = Annotated[DeviceChoice | None, typer.Option("--device", help="Where to train (auto: CUDA if present).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML file with option defaults.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Run directory to create (or resume).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def enum_value(choice: Enum | None) -> str | None:
    return None if choice is None else str(choice.value)
