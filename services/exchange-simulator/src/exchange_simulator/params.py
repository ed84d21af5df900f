"""Request parameters as Binance reads them: the query string and the form body together."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import parse_qsl

from aiohttp import web

from exchange_simulator import errors

_DECIMAL = re.compile(errors.DECIMAL_PATTERN)
_INTEGER = re.compile(r"^-?[0-9]{1,20}$")


@dataclass(frozen=True)
class Params:
    """The parameters of one request, with the raw texts the signature covers."""

    values: dict[str, str]
    query_string: str
    body: str

    @classmethod
    async def read(cls, request: web.Request) -> Params:
        body = await request.text() if request.can_read_body else ""
        pairs = parse_qsl(request.query_string, keep_blank_values=True)
        pairs += parse_qsl(body, keep_blank_values=True)
        values: dict[str, str] = {}
        for name, value in pairs:
            if name in values:
                raise errors.duplicate_parameter()
            values[name] = value
        return cls(values, request.query_string, body)

    def get(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if value else None

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise errors.mandatory(name)
        return value

    def decimal(self, name: str) -> Decimal | None:
        value = self.get(name)
        if value is None:
            return None
        if not _DECIMAL.match(value):
            raise errors.illegal_characters(name)
        return Decimal(value)

    def integer(self, name: str) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if not _INTEGER.match(value):
            raise errors.illegal_integer(name)
        return int(value)
