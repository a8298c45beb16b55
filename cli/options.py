"""Option types shared by several commands."""

from __future__ import annotations

import json
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

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
CalibrateOpt = Annotated[int | None, typer.Option(
    help="Validation episodes per cell for choosing the device settings at the end (steps, step size, "
         "temperature; `mtl calibrate`); 0 leaves the checkpoint uncalibrated.")]


def enum_value(choice: Enum | None) -> str | None:
    return None if choice is None else str(choice.value)


def key_values(pairs: list[str] | None, flag: str, parse_json: bool = False) -> dict[str, Any] | None:
    """Repeated `flag KEY=VALUE` pairs → {KEY: VALUE}; with `parse_json`, a VALUE that is JSON (128, true,
    [64, 128]) is read as such, anything else stays text."""
    from mtl.device_runtime.errors import ConfigError

    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r}: write it as KEY=VALUE, e.g. {flag} width=128")
        value = value.strip()
        if parse_json:
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key.strip().replace("-", "_") if parse_json else key.strip()] = value
    return out


BackboneOptionOpt = Annotated[list[str] | None, typer.Option(
    "--backbone-option", help="An option of the backbone as KEY=VALUE (repeatable), e.g. width=128 or pools=3 "
                              "(conv4).")]


def fractions(text: str | None) -> tuple[float, float, float] | None:
    """`--split 0.6,0.2,0.2` → (0.6, 0.2, 0.2)."""
    from mtl.device_runtime.errors import ConfigError

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--split {text!r}: give three fractions TRAIN,VAL,TEST, e.g. 0.6,0.2,0.2") from None
    if len(values) != 3:
        raise ConfigError(f"--split {text!r}: give three fractions TRAIN,VAL,TEST, e.g. 0.6,0.2,0.2")
    return values  # type: ignore[return-value]


SplitOpt = Annotated[str | None, typer.Option(
    "--split", help="Class split TRAIN,VAL,TEST fractions (default 0.6,0.2,0.2; TEST 0 holds nothing out).")]
SplitByOpt = Annotated[str | None, typer.Option(
    "--split-by", help="auto (the source's official split, else superclasses), superclass, class, or "
                       "superclass-test (test by superclass, validation by class within the others).")]
