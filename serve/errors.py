"""Errors: the 4xx type with field-level items, the error body, JSON responses that always encode, what a
decoder's error means (field, value, expectation), the exception handlers.

Every error body is ``{"detail": [{field, loc, msg, type}, ...]}`` (at most
:data:`MAX_ERRORS_SHOWN` items, then one ``more_errors`` item with the count) or
``{"detail": "text"}``. Whatever a client sent (lone surrogates, bytes that are not
UTF-8, megabytes of it), the text that goes back is made safe to encode first
(:func:`safe_text`) and offending values are shown shortened (:func:`show`), so
building an error can never fail into a 500.
"""

from __future__ import annotations

import json
import logging
import re

import msgspec
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from sellerlift.schema import EVENT_TYPES
from serve import jsonscan

log = logging.getLogger("serve")

MAX_ERRORS_SHOWN = 20
SHOW_CHARS = 80  # an offending value is shown up to this many characters
SHOW_BYTES = 1 << 20  # an offending value is looked up only in JSON up to this size
JSON = "application/json"

Item = tuple[tuple, str, str]  # (loc, msg, type); loc like ("customers", 3, "events", 0, "ts")


class ClientError(Exception):
    """A 4xx with field-level items. ``total``: how many errors there were (items may hold only the first ones)."""

    def __init__(self, status: int, items: list[Item], total: int | None = None, headers: dict | None = None):
        super().__init__(items[0][1] if items else "")
        self.status, self.items, self.headers = status, items, headers
        self.total = max(len(items), total or 0)


def safe_text(value, limit: int | None = None) -> str:
    """``value`` as text that encodes as UTF-8 (lone surrogates -> ``\\udc80``), cut at ``limit`` characters."""
    s = value if isinstance(value, str) else str(value)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def show(value) -> str:
    """A short, safe rendering of an offending value: ``'yesterday'``, ``1.5``, ``true``, ``{...}``."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of {len(str(abs(value))) if value.bit_length() < 10_000 else 'thousands of'} digits"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "an object" + (
            f" with keys {safe_text(', '.join(map(str, list(value)[:5])), SHOW_CHARS)}" if value else " (empty)"
        )
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)"
    return safe_text(repr(value), SHOW_CHARS)


def field_name(loc) -> str:
    """('body', 'customers', 3, 'events', 0, 'ts') -> 'customers[3].events[0].ts'."""
    out = ""
    for part in loc:
        if part == "body" and out == "":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + safe_text(part, 300)
    return out or "body"


def error_body(items: list[Item], total: int | None = None) -> dict:
    total = max(len(items), total or 0)
    shown = [
        {
            "field": field_name(loc),
            "loc": [p if isinstance(p, int) else safe_text(p, 300) for p in loc or ("body",)],
            "msg": safe_text(msg, 2000),
            "type": safe_text(typ, 100),
        }
        for loc, msg, typ in items[:MAX_ERRORS_SHOWN]
    ]
    if total > MAX_ERRORS_SHOWN:
        shown.append(
            {
                "field": "body",
                "loc": ["body"],
                "msg": f"... and {total - MAX_ERRORS_SHOWN} more error(s)",
                "type": "more_errors",
            }
        )
    return {"detail": shown}


_ENCODER = msgspec.json.Encoder()


def encode(payload) -> bytes:
    """JSON bytes (msgspec); text that cannot be encoded as UTF-8 is escaped instead of failing."""
    try:
        return _ENCODER.encode(payload)
    except (UnicodeEncodeError, TypeError, OverflowError, ValueError):
        return json.dumps(
            msgspec.to_builtins(payload) if not isinstance(payload, (dict, list)) else payload,
            ensure_ascii=True,
            default=str,
        ).encode()


def json_response(payload, status: int = 200, headers: dict | None = None) -> Response:
    return Response(encode(payload), status_code=status, media_type=JSON, headers=headers)


def error_response(status: int, items: list[Item], total: int | None = None, headers: dict | None = None) -> Response:
    return json_response(error_body(items, total), status, headers)


def detail_response(status: int, detail: str, headers: dict | None = None, **extra) -> Response:
    return json_response({"detail": safe_text(detail, 4000), **extra}, status, headers)


# ------------------------------------------------------------------ a decoder's errors -> items

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>[^`]*)`(?: in `(?P<where>[^`]*)`)?)?$", re.S)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")
_MISSING = re.compile(r"^Object missing required field `(.+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(.+)`$", re.S)
_ENUM = re.compile(r"^Invalid enum value (.+)$", re.S)


def error_path(err: Exception) -> list:
    """The path of a msgspec error as steps: ``$.customers[3].events`` -> ["customers", 3, "events"]."""
    return _split_path(_AT.match(str(err)).group("path"))


def _split_path(path: str | None) -> list:
    if not path or not path.startswith("$"):
        return []
    return [
        m.group(1) if m.group(1) is not None else (int(m.group(2)) if m.group(2) != "..." else ...)
        for m in _STEP.finditer(path[1:])
    ]


def _decoded(doc):
    """A top-level member kept as msgspec.Raw, decoded only now (and only if small)."""
    if isinstance(doc, msgspec.Raw):
        if len(doc) > SHOW_BYTES:
            raise KeyError("too large to show")
        return msgspec.json.decode(doc)
    return doc


def _lookup(doc, steps):
    for s in steps:
        doc = _decoded(doc)
        in_dict = isinstance(doc, dict) and isinstance(s, str) and s in doc
        if in_dict or (isinstance(doc, list) and isinstance(s, int) and s < len(doc)):
            doc = doc[s]
        else:
            raise KeyError(s)
    return _decoded(doc)


def _shape(loc: tuple) -> tuple:
    """(customers, 3, events, 0) -> ("c", "e"): which Struct a location is in."""
    return tuple({"customers": "c", "events": "e"}[p] for p in loc if p in ("customers", "events"))


def translate(err: msgspec.ValidationError, allowed: dict, prefix: tuple = (), doc=msgspec.UNSET) -> Item:
    """A msgspec ValidationError as (loc, msg, type); ``doc``: the untyped JSON the path is relative to."""
    m = _AT.match(str(err))
    msg, steps = m.group("msg"), _split_path(m.group("where") or m.group("path"))
    if m.group("where"):  # "at `key` in `$.seller_budgets`": a key of an object is wrong
        msg = f"{msg} (a key)"
    if ... in steps and doc is not msgspec.UNSET:  # "$.seller_budgets[...]": find the offending key
        steps = steps[: steps.index(...)] + [_first_bad_value(_safe_lookup(doc, steps[: steps.index(...)]))]
    if msg.startswith("JSON is malformed"):
        msg = "invalid JSON: " + msg[len("JSON is malformed: ") :]
    steps = [s for s in steps if s is not ...]
    loc = prefix + tuple(steps)
    if (hit := _MISSING.match(msg)) is not None:
        return loc + (hit.group(1),), f"missing required field `{hit.group(1)}`", "missing"
    if (hit := _UNKNOWN.match(msg)) is not None:
        names = ", ".join(allowed.get(_shape(loc), []))
        return loc + (hit.group(1),), f"unknown field `{hit.group(1)}`; expected only: {names}", "extra_forbidden"
    value = _safe_lookup(doc, steps)
    if (hit := _ENUM.match(msg)) is not None:
        return loc, f"unknown value {hit.group(1)}; expected one of {', '.join(EVENT_TYPES)}", "enum"
    if "out of range" in msg:
        return loc, f"{msg}: a number too large (or too precise) for this field", "out_of_range"
    if ", got `" in msg:
        return loc, msg if value is msgspec.UNSET else f"{msg} ({show(value)})", "type_error"
    return loc, msg if value is msgspec.UNSET else f"{msg}, got {show(value)}", "value_error"


def _safe_lookup(doc, steps):
    if doc is msgspec.UNSET:
        return msgspec.UNSET
    try:
        return _lookup(doc, [s for s in steps if s is not ...])
    except (KeyError, TypeError, msgspec.DecodeError, RecursionError):
        return msgspec.UNSET


def _first_bad_value(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                return k
    return ...


def decode_error(err: Exception, body) -> ClientError:
    """Malformed JSON (or too deep) as a 422 that says what and where, with the field when it can be named."""
    if isinstance(err, RecursionError):
        return ClientError(
            422,
            [
                (
                    ("body",),
                    "invalid JSON: nested too deeply (arrays/objects inside each other hundreds of levels down)",
                    "json_invalid",
                )
            ],
        )
    text = str(err)
    hit = re.search(r"\(byte (\d+)\)", text)
    what = text.replace("JSON is malformed: ", "").split(" (byte")[0]
    if not len(body):
        return ClientError(
            422, [(("body",), "invalid JSON: the body is empty; expected a JSON object", "json_invalid")]
        )
    if hit is None:  # "Input data was truncated"
        return ClientError(
            422, [(("body",), "invalid JSON: the body ends before the JSON value is complete", "json_invalid")]
        )
    at = int(hit.group(1))
    line, col = jsonscan.line_col(body, at)
    loc = jsonscan.path_at(body, at)
    token = bytes(memoryview(body)[at : at + 9])
    if token.startswith((b"NaN", b"Infinity", b"-Infinity")):
        msg = f"{token.split(b',')[0].split(b'}')[0].decode()} is not a JSON number; expected a finite number"
        return ClientError(422, [(loc or ("body",), msg, "finite_number")])
    where = f"line {line}, column {col} (byte {at})" + (f", in {field_name(loc)}" if loc else "")
    return ClientError(422, [(("body",), f"invalid JSON at {where}: {what}", "json_invalid")])


# ------------------------------------------------------------------ handlers


async def _client(request, exc: ClientError):
    return error_response(exc.status, exc.items, exc.total, exc.headers)


async def _http(request, exc: StarletteHTTPException):
    return detail_response(exc.status_code, str(exc.detail), exc.headers)


async def _validation(request, exc: RequestValidationError):  # FastAPI's own (parameters); bodies never get here
    items = [
        (tuple(e.get("loc", ("body",))), str(e.get("msg", "invalid")), str(e.get("type", "value_error")))
        for e in exc.errors()
    ]
    return error_response(422, items)


async def _bug(request, exc: Exception):
    log.exception("internal error on %s", safe_text(request.url.path, 200))
    return detail_response(500, "internal server error")


def install(app) -> None:
    app.add_exception_handler(ClientError, _client)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _bug)
