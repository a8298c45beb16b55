"""JSON in and out of files a device reads (manifests, adapted states) and of what mtl prints.

Reading: the standard library's parser accepts what no mtl file holds and fails in ways that are not a
`ValueError` about the file — nesting thousands deep overflows the stack (RecursionError), an integer of
thousands of digits is refused only past 4,300 digits and then costs quadratic time, and `NaN`,
`Infinity` or `1e999` come back as non-finite floats that poison every later computation. `loads` bounds all
three and raises the caller's error type naming the file.

Writing: `dumps` never emits `NaN` or `Infinity` (not JSON; a strict parser refuses the whole document);
a number that is not finite is written as null.
"""

from __future__ import annotations

import json
import math
from typing import Any

from mtl.device_runtime.errors import MtlError

MAX_DEPTH = 32  # an mtl manifest nests 5 deep
MAX_INT_DIGITS = 19  # every integer mtl writes fits in int64


def loads(data: bytes, label: str, error: type[MtlError]) -> Any:
    """UTF-8 JSON bytes → the value; anything else (or beyond the bounds above) raises `error` naming `label`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{label} is not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        _check_depth(text)
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except ValueError as exc:  # json.JSONDecodeError and the bounds below
        raise error(f"{label} is not valid JSON: {' '.join(str(exc).split())[:200]}") from None


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` with every non-finite float written as null (and never as NaN / Infinity)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def finite(value: Any) -> Any:
    """A copy of a JSON-ready value with NaN / ±inf floats replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _int(token: str) -> int:
    if len(token.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(token.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(token)


def _float(token: str) -> float:
    if len(token) > 64:
        raise ValueError(f"a number written with {len(token)} characters")
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"the number {token} is out of the float range")
    return value


def _constant(token: str) -> float:
    raise ValueError(f"{token} is not a JSON number")


def _check_depth(text: str) -> None:
    """Refuse arrays/objects nested deeper than `MAX_DEPTH` (brackets inside strings do not count)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
        elif char in "]}":
            depth -= 1
