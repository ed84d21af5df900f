"""The typed envelope every event travels in on the bus, and its encoding as a stream entry.

A stream entry has one field, ``envelope``, holding one JSON object::

    {"type": "Candle", "v": 1, "id": "<32 random hex digits>", "time": "<ISO 8601 UTC>",
     "payload": {...the model's JSON (model_dump_json): Decimals as strings...}}

- ``type``: the event model's class name, which picks the ``shared.models`` class;
- ``v``: the envelope schema version (`SCHEMA_VERSION`);
- ``id``: 128 random bits, unique per published event, the same on every redelivery;
- ``time``: when it was published (events published together by `encode_many` share it).

Encoding is on every publisher's hot path, so it is one ``model_dump_json`` per event with
the rest formatted around it: the ids of a batch come from one ``os.urandom`` call and the
batch's time is formatted once (``uuid.uuid4()`` and ``datetime.isoformat()`` per event
cost more than the payload's JSON).

One field (rather than one per key) keeps an entry to two bulk strings on the wire, and the
whole envelope is validated by one pydantic call (a union discriminated by ``type``), which
is most of what a consumer spends per event. Anything that does not decode into a known
model of the supported version raises `MalformedEvent`; the consumer dead-letters it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)

from shared.models import (
    Candle,
    Order,
    PortfolioSnapshot,
    Position,
    Signal,
    Trade,
)

SCHEMA_VERSION = 1
"""Bumped when the envelope changes incompatibly; a consumer rejects other versions."""

FIELD = "envelope"
"""The name of the stream entry's one field."""
_FIELD_BYTES = FIELD.encode()

EVENT_TYPES: dict[str, type[BaseModel]] = {
    cls.__name__: cls for cls in (Candle, Signal, Order, Trade, Position, PortfolioSnapshot)
}
"""The models that may travel on the bus, by the name written in the envelope's ``type``."""


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


class _EnvelopeModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1]
    id: str = Field(min_length=1)
    # Normalised to UTC by decode_envelope, not here: a consumer only wants the payload.
    time: AwareDatetime


def _envelope_model(name: str, model: type[BaseModel]) -> type[_EnvelopeModel]:
    return create_model(
        f"{name}Envelope",
        __base__=_EnvelopeModel,
        type=(Literal[name], ...),  # type: ignore[arg-type]
        payload=(model, ...),
    )


_ENVELOPES = tuple(_envelope_model(name, model) for name, model in EVENT_TYPES.items())
_ADAPTER: TypeAdapter[Any] = TypeAdapter(
    Annotated[Union[_ENVELOPES], Field(discriminator="type")]  # type: ignore[arg-type]  # noqa: UP007
)


def _check_type(event: BaseModel) -> str:
    name = type(event).__name__
    if EVENT_TYPES.get(name) is not type(event):
        raise TypeError(
            f"cannot publish {name}: the bus carries only {', '.join(sorted(EVENT_TYPES))}"
        )
    return name


def _published(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat()


def encode_envelope(event: BaseModel, *, now: datetime | None = None) -> str:
    """The envelope JSON of ``event``; raises TypeError for a model the bus doesn't carry."""
    name = _check_type(event)
    # The type name, hex id and ISO time need no JSON escaping; the payload is pydantic's.
    return (
        f'{{"type":"{name}","v":{SCHEMA_VERSION},"id":"{os.urandom(16).hex()}",'
        f'"time":"{_published(now)}","payload":{event.model_dump_json()}}}'
    )


def encode_many(events: Iterable[BaseModel], *, now: datetime | None = None) -> list[str]:
    """The envelope JSON of each of ``events``, in order, all stamped with one time.

    Raises TypeError, before encoding anything, if one of them is a model the bus doesn't carry.
    """
    events = list(events)
    names = [_check_type(event) for event in events]
    ids = os.urandom(16 * len(events)).hex()
    head = f'","v":{SCHEMA_VERSION},"id":"'
    tail = f'","time":"{_published(now)}","payload":'
    return [
        f'{{"type":"{name}{head}{ids[32 * n : 32 * n + 32]}{tail}{event.model_dump_json()}}}'
        for n, (name, event) in enumerate(zip(names, events, strict=True))
    ]


def encode(event: BaseModel, *, now: datetime | None = None) -> dict[str, str]:
    """The stream entry fields carrying ``event``."""
    return {FIELD: encode_envelope(event, now=now)}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def text_fields(fields: Mapping[Any, Any] | None) -> dict[str, str]:
    """Stream fields as ``str`` → ``str``, whether the client decodes responses or not."""
    if fields is None:
        return {}
    return {_text(key): _text(value) for key, value in fields.items()}


def _validate(raw: str | bytes) -> Any:
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise MalformedEvent(_explain(exc)) from None


def decode_envelope(raw: str | bytes) -> Envelope:
    """Decode envelope JSON; raises `MalformedEvent` naming what is wrong."""
    parsed = _validate(raw)
    return Envelope(
        type=parsed.type,
        version=parsed.v,
        id=parsed.id,
        time=parsed.time.astimezone(UTC),
        event=parsed.payload,
    )


def _raw_envelope(fields: Mapping[Any, Any] | None) -> Any:
    if not fields:
        raise MalformedEvent(f"entry has no {FIELD!r} field")
    raw = fields.get(_FIELD_BYTES)
    if raw is None:
        raw = fields.get(FIELD)
        if raw is None:
            names = ", ".join(sorted(_text(key) for key in fields))
            raise MalformedEvent(f"entry has no {FIELD!r} field (it has {names})")
    return raw


def decode(fields: Mapping[Any, Any] | None) -> Envelope:
    """Decode a stream entry's fields into an `Envelope`; raises `MalformedEvent`."""
    return decode_envelope(_raw_envelope(fields))


def decode_event(fields: Mapping[Any, Any] | None) -> BaseModel:
    """Just the event of a stream entry (what a consumer's handler gets), validated as by
    `decode`, which it equals: ``decode(fields).event``. Raises `MalformedEvent`."""
    event: BaseModel = _validate(_raw_envelope(fields)).payload
    return event


def _explain(exc: ValidationError) -> str:
    """One line saying what is wrong with an envelope, from pydantic's first error."""
    error = exc.errors()[0]
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    if kind == "json_invalid":
        return f"envelope is not valid JSON ({ctx.get('error', error['msg'])})"
    if not loc and kind not in {"union_tag_not_found", "union_tag_invalid"}:
        return f"envelope is not a JSON object ({error['msg']})"
    if kind == "union_tag_not_found":
        return "envelope lacks its 'type'"
    if kind == "union_tag_invalid":
        return f"unknown event type {ctx.get('tag')!r}"
    type_name = str(loc[0]).removesuffix("Envelope") if loc else "?"
    field = [str(part) for part in loc[1:]]
    if field == ["v"]:
        if kind == "missing":
            return "envelope lacks its 'v' (schema version)"
        return (
            f"envelope version {error.get('input')!r} is not supported "
            f"(this consumer reads {SCHEMA_VERSION})"
        )
    if field and field[0] == "payload":
        where = ".".join(field[1:]) or "payload"
        return (
            f"{type_name} payload is invalid ({exc.error_count()} error(s)); "
            f"{where}: {error['msg']}"
        )
    return f"envelope field {'.'.join(field) or '?'} is invalid: {error['msg']}"
