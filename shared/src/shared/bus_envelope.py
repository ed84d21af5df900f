"""The typed envelope every event travels in on the bus, and its encoding as stream fields.

A stream entry has five fields:

- ``type``: the event model's class name (``Candle``, ``Signal``, ...), which picks the
  ``shared.models`` class the payload is decoded into;
- ``v``: the envelope schema version (`SCHEMA_VERSION`);
- ``id``: a unique id of this event (a UUID4 hex), stable across redeliveries;
- ``time``: when it was published, ISO 8601 UTC;
- ``payload``: the model's JSON (``model_dump_json``), so Decimals keep every digit.

Anything that does not decode into a known model of a supported version raises
`MalformedEvent`; the consumer dead-letters such entries instead of crashing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ValidationError

from shared.models import Candle, Order, PortfolioSnapshot, Position, Signal, Trade

SCHEMA_VERSION = 1
"""Bumped when the envelope's fields change incompatibly; older consumers reject newer ones."""

EVENT_TYPES: dict[str, type[BaseModel]] = {
    cls.__name__: cls for cls in (Candle, Signal, Order, Trade, Position, PortfolioSnapshot)
}
"""The models that may travel on the bus, by the name written in the envelope's ``type``."""

FIELDS = ("type", "v", "id", "time", "payload")


class MalformedEvent(ValueError):
    """A stream entry that is not a valid envelope of a known event type."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded event with its envelope metadata."""

    type: str
    version: int
    id: str
    time: datetime
    event: BaseModel


def encode(event: BaseModel, *, now: datetime | None = None) -> dict[str, str]:
    """The stream fields carrying ``event``; raises TypeError for a model the bus doesn't know."""
    name = type(event).__name__
    if EVENT_TYPES.get(name) is not type(event):
        raise TypeError(
            f"cannot publish {name}: the bus carries only {', '.join(sorted(EVENT_TYPES))}"
        )
    return {
        "type": name,
        "v": str(SCHEMA_VERSION),
        "id": uuid.uuid4().hex,
        "time": (now or datetime.now(UTC)).isoformat(),
        "payload": event.model_dump_json(),
    }


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise MalformedEvent(f"field value of unexpected type {type(value).__name__}")


def text_fields(fields: Mapping[object, object] | None) -> dict[str, str]:
    """Stream fields as ``str`` → ``str`` whether the client decodes responses or not."""
    if fields is None:
        return {}
    try:
        return {_text(key): _text(value) for key, value in fields.items()}
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"entry is not UTF-8: {exc}") from None


def decode(fields: Mapping[object, object] | None) -> Envelope:
    """Decode stream fields into an `Envelope`; raises `MalformedEvent` naming what is wrong."""
    data = text_fields(fields)
    missing = [name for name in FIELDS if name not in data]
    if missing:
        raise MalformedEvent(f"entry lacks envelope field(s) {', '.join(missing)}")
    try:
        version = int(data["v"])
    except ValueError:
        raise MalformedEvent(f"envelope version {data['v']!r} is not a number") from None
    if version != SCHEMA_VERSION:
        raise MalformedEvent(
            f"envelope version {version} is not supported (this consumer reads {SCHEMA_VERSION})"
        )
    model = EVENT_TYPES.get(data["type"])
    if model is None:
        raise MalformedEvent(f"unknown event type {data['type']!r}")
    try:
        time = datetime.fromisoformat(data["time"])
    except ValueError:
        raise MalformedEvent(f"envelope time {data['time']!r} is not ISO 8601") from None
    if time.tzinfo is None:
        raise MalformedEvent(f"envelope time {data['time']!r} has no timezone")
    try:
        event = model.model_validate_json(data["payload"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise MalformedEvent(
            f"{data['type']} payload is invalid ({exc.error_count()} error(s)); "
            f"{where}: {first['msg']}"
        ) from None
    return Envelope(
        type=data["type"], version=version, id=data["id"], time=time.astimezone(UTC), event=event
    )
