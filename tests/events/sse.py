"""A reader of a Server-Sent Events body for the tests (httpx streaming), written from the format's rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Sse:
    id: int
    type: str
    data: dict[str, Any]


async def read_events(response: httpx.Response) -> AsyncIterator[Sse]:
    """Each event of ``response`` (comments and the ``retry`` field skipped; every cmnode event has an id)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Sse(int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
