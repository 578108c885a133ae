"""JSON that strict parsers read (Python's ``json.loads(..., parse_constant=...)`` refusing
NaN, jq, JavaScript): the convention of every JSON that jacgeom prints."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def strict(x: Any) -> Any:
    """``x`` with numpy scalars as Python numbers, infinite floats as the strings "inf" and
    "-inf", NaN (an undefined value) as null, tuples as lists and keys as strings."""
    if isinstance(x, dict):
        return {str(k): strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if math.isnan(v):
            return None
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    return x
