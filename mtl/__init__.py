"""mtl — meta-transfer learning for the edge.

The parts of the package live in the repository's top-level folders and are installed under this one name
(pyproject.toml's `package-dir`): `mtl.pipeline` (training, needs the `train` extra), `mtl.exporters`,
`mtl.device_runtime` (numpy + onnxruntime + Pillow) and `mtl.cli` (`mtl ...`, also `python -m mtl`).
In a source checkout — this folder beside pyproject.toml — the checkout itself joins the package's path, so
the same imports work from the repository without an install.
"""

from pathlib import Path as _Path

_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "device_runtime" / "__init__.py").is_file():
    __path__.append(str(_checkout))
