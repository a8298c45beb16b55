"""Torch-free on-device adaptation with numpy, onnxruntime and Pillow. Filled by the export work."""
