"""JSON for the model server's Flask app, with orjson.

Seldon's wrapper reads request bodies with ``request.get_json()`` and writes answers
with ``flask.jsonify``; both go through the app's JSON provider. The default one is the
standard library's ``json`` (with sorted keys), which spends more time on a
10,000-row request than the model does. :class:`OrjsonProvider` parses and writes the
same JSON with orjson, falling back to ``json`` for the documents orjson refuses
(``NaN``/``Infinity`` tokens, huge integers, deep nesting), so a body means the same
whichever parser read it; numpy arrays and scalars are written directly.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask import Flask
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    # What orjson does not write itself: numpy types it has no native form for,
    # Decimal, sets and the like, as Flask's default provider writes them.
    return DefaultJSONProvider.default(value)


def dumps_bytes(value: Any) -> bytes:
    """Serialize to JSON bytes (numpy arrays and scalars included)."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def loads(data: str | bytes) -> Any:
    """Parse JSON as Python's ``json`` does, with orjson for what orjson reads.

    orjson refuses what Python's parser accepts and clients send (``NaN`` and
    ``Infinity`` from ``json.dumps``, integers beyond 64 bits) and nesting deeper than
    1024 levels: those documents are parsed by ``json``, so they mean the same thing
    whichever parser read them.

    Raises:
        ValueError: Not JSON.
        RecursionError: Nested too deeply for Python's parser.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


class OrjsonProvider(DefaultJSONProvider):
    """A Flask JSON provider that reads and writes with orjson."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Serialize to a JSON string (Flask's interface)."""
        return dumps_bytes(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse a JSON document."""
        return loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Any:
        """A JSON response without decoding the bytes to text and back."""
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumps_bytes(obj), mimetype="application/json")


def install(app: Flask) -> None:
    """Make orjson the app's JSON provider."""
    app.json = OrjsonProvider(app)
