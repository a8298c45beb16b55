"""Server side of mtl: data, models, meta-learning algorithms and training loops (needs torch).

Importing the package itself is torch-free so that `pipeline.errors` can be shared with the CLI
on a device; the subpackages import torch.
"""
