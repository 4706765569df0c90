"""Input bounds shared by REST bodies, socket payloads and events."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import AfterValidator

MAX_DATA_BYTES = 16 * 1024


def _bounded_data(value: dict[str, Any]) -> dict[str, Any]:
    if len(orjson.dumps(value)) > MAX_DATA_BYTES:
        raise ValueError(f"data must encode to at most {MAX_DATA_BYTES} bytes of JSON")
    return value


BoundedData = Annotated[dict[str, Any], AfterValidator(_bounded_data)]
