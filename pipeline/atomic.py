"""Atomic file writes, re-exported from `device_runtime.atomic` (their one definition, torch-free)."""

from mtl.device_runtime.atomic import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_output,
    read_jsonl,
    replace_dir,
)

__all__ = ["append_jsonl", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "check_output",
           "read_jsonl", "replace_dir"]
