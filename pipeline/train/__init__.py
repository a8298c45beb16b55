"""Training loops, evaluation and checkpoints."""
