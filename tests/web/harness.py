"""Drive the JavaScript device runtime (device_runtime/web) from the Python tests: the Node layer
(onnxruntime-node, `test/node_runner.mjs`) and the browser layer (a real headless Chromium, `test/browser.mjs`).

Skipped where Node, the web package's node_modules or Chromium are missing — unless MTL_WEB_REQUIRED=1 (`.ci/run`
sets it, after `make web` has installed them), where a missing piece fails instead: CI never passes by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "device_runtime" / "web"


def chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def need(what: str, present: bool) -> None:
    if present:
        return
    message = f"the web runtime's tests need {what} (`make web` installs the package; Debian's chromium for the page)"
    if os.environ.get("MTL_WEB_REQUIRED") == "1":
        pytest.fail(message)
    pytest.skip(message)


def need_node() -> None:
    need("Node.js", shutil.which("node") is not None)
    need("device_runtime/web/node_modules", (WEB / "node_modules" / "onnxruntime-node").is_dir())


def need_browser() -> None:
    need_node()
    need("device_runtime/web/dist (npm run build)", (WEB / "dist" / "app.js").is_file())
    need("Chromium", chromium() is not None)


def _node(script: str, payload: object, tmp: Path, timeout: float) -> list[dict]:
    jobs = tmp / f"{script.replace('/', '_')}.jobs.json"
    jobs.write_text(json.dumps(payload))
    env = {**os.environ, **({"CHROMIUM": chromium()} if chromium() else {})}
    run = subprocess.run(["node", str(WEB / script), str(jobs)], capture_output=True, text=True, timeout=timeout,
                         env=env, cwd=WEB)
    assert run.returncode == 0, f"node {script} failed:\n{run.stderr[-3000:]}"
    return json.loads(run.stdout)


def node_jobs(jobs: list[dict], tmp: Path) -> list[dict]:
    """Run jobs through the JavaScript runtime under Node (onnxruntime-node)."""
    need_node()
    return _node("test/node_runner.mjs", jobs, tmp, timeout=300)


def browser_jobs(jobs: list[dict], files: Path, tmp: Path) -> list[dict]:
    """Run jobs through the page in headless Chromium; `files` is served as /files/ (URLs: `url(path)`)."""
    need_browser()
    return _node("test/browser.mjs", {"dist": str(WEB / "dist"), "files": str(files), "jobs": jobs}, tmp, timeout=600)


def url(path: Path, files: Path) -> str:
    return "/files/" + path.relative_to(files).as_posix()


def rgba_job(image: Path) -> dict:
    """An image as the Node layer takes it: the RGBA pixels a browser decodes it to (Pillow's decode, converted)."""
    with Image.open(image) as source:
        pixels = source.convert("RGBA")
    raw = image.with_suffix(image.suffix + ".rgba")
    raw.write_bytes(pixels.tobytes())
    return {"file": str(raw), "width": pixels.width, "height": pixels.height}
