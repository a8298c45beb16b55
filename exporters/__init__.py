"""Checkpoint → deploy bundle (ONNX graphs, init.npz, manifest.json). Filled by the export work."""
