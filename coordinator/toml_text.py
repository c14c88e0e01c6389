"""Writing the few small TOML files Flower reads: flat tables of strings, numbers and flags.

Python's standard library reads TOML but does not write it, and these files need no more
than ``key = value`` lines, so this is the whole writer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

TomlScalar = bool | int | float | str


def toml_value(value: TomlScalar) -> str:
    """``value`` as a TOML literal.

    Strings are written as JSON strings, whose escapes are a subset of TOML's basic strings.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # always has a '.' or an exponent, so TOML reads a float back
    return json.dumps(value, ensure_ascii=False)


def toml_key(key: str) -> str:
    """``key`` bare when TOML allows it (letters, digits, '-' and '_'), else quoted."""
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else json.dumps(key, ensure_ascii=False)


def toml_table(name: str | None, values: Mapping[str, TomlScalar]) -> str:
    """A ``[name]`` table (no header when ``name`` is None) of ``key = value`` lines."""
    lines = [] if name is None else [f"[{name}]"]
    lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"
