"""JSON from clients, with bounds: nesting depth and number size, refused as invalid input.

Python's parser answers a 10,000-deep array with RecursionError and a 5,000-digit number with
a ValueError from int(), and turns 1e999 into inf; each of those was a 500. Here the number
hooks refuse long numbers before int() runs, NaN/Infinity (not JSON) and non-finite floats,
and depth is checked after parsing (the parser's own recursion limit, about 1000, is the
stop for deeper bodies). What a body can cost stays proportional to its size, which
MAX_UPLOAD_BYTES bounds.
"""

from __future__ import annotations

import json
import math

from app.core.errors import InvalidInput

MAX_DEPTH = 32  # an OIP request nests about 5 deep; the seed's JSON 3
MAX_NUMBER_CHARS = 32  # int64 needs 20, a double's repr 24


class _Refused(ValueError):
    pass


def _number(text: str) -> None:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters; numbers take at most {MAX_NUMBER_CHARS}")


def _int(text: str) -> int:
    _number(text)
    return int(text)


def _float(text: str) -> float:
    _number(text)
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text} is out of range for a number")
    return value


def _constant(name: str):
    raise _Refused(f"{name} is not a JSON value")


def depth(value) -> int:
    """Nesting depth, without recursion (only containers are visited twice)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in item if isinstance(child, dict | list))
    return deepest


def load_json(data: bytes | str, code: str = "invalid_json", what: str = "the body"):
    try:
        value = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _Refused as exc:
        raise InvalidInput(code, f"{what} is refused: {exc}") from None
    except RecursionError:
        raise InvalidInput(code, f"{what} nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(code, f"{what} is not JSON: {exc}") from None
    if depth(value) > MAX_DEPTH:
        raise InvalidInput(code, f"{what} nests deeper than {MAX_DEPTH} levels")
    return value
