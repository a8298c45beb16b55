from dataclasses import dataclass

import pytest

from mtl.pipeline.atomic import append_jsonl, atomic_write_bytes, read_jsonl
from mtl.pipeline.config import resolve_config
from mtl.pipeline.errors import ConfigError, OutputError


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "state.bin"
    atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OutputError, match="cannot write .*state.bin: disk full"):  # one line for the CLI
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]  # no temp file left behind


def test_jsonl_appends_whole_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    append_jsonl(path, {"epoch": 2, "loss": 0.5})
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2, "loss": 0.5}]


@dataclass(frozen=True)
class Demo:
    a: int = 1
    b: str = "x"
    c: tuple[float, ...] = (1.0,)


def test_flags_override_toml_which_overrides_defaults(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('a = 5\nb = "from-file"\nc = [0.5, 0.5]\n')
    cfg = resolve_config(Demo, toml, b="from-flag", a=None)
    assert cfg == Demo(a=5, b="from-flag", c=(0.5, 0.5))


def test_unknown_toml_key_is_named(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("epochz = 3\n")
    with pytest.raises(ConfigError, match="unknown key.*epochz"):
        resolve_config(Demo, toml)


def test_missing_and_malformed_toml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(Demo, tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("a = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(Demo, bad)
