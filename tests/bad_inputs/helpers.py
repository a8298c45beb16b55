"""What every bad-input test shares: run `mtl`, expect one clean error line, prove nothing changed."""

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from mtl.cli.app import app

runner = CliRunner()
CLASSES = ["circle", "square", "star"]


def fails_cleanly(args: list[str], culprit: str, code: int = 1):
    """Run `mtl args`; assert exit `code`, one stderr line that names `culprit`, no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert culprit in lines[0], (culprit, lines[0])
    return lines[0]


def snapshot(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (hidden temporaries included), to prove nothing changed."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder(root: Path, classes: int, per_class: int, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            (root / f"class{c:02d}" / f"{i}.png").write_bytes(png(rng.integers(0, 255, (size, size), np.uint8)))
    return root


def adapt_args(bundle: Path, support: Path, out: Path, *extra: str) -> list[str]:
    return ["adapt", str(bundle), str(support), "--out", str(out), *extra]


REPO = Path(__file__).resolve().parents[2]


def fails_cleanly_in_a_process(args: list[str], culprit: str, code: int = 1, prelude: str = "",
                               cwd: Path | None = None) -> str:
    """`fails_cleanly` for a real `mtl` process: its whole stderr, Python warnings included (in-process, pytest
    captures warnings before they reach stderr), must be the one error line. `prelude` runs first (a patch)."""
    import os
    import subprocess
    import sys

    script = f"{prelude}\nimport sys\nfrom mtl.cli.app import main\nsys.argv = ['mtl', *{args!r}]\nmain()\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "default"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                            timeout=300, cwd=cwd or REPO)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert culprit in lines[0], (culprit, lines[0])
    return lines[0]
