"""The FastAPI app: validation, auth, metrics, the endpoints and zero-downtime reload.

Request path: ASGI gate (auth -> body-size limit -> metrics) -> FastAPI/pydantic
(JSON, types, per-field rules) -> :func:`build_batch` (limits, timestamps,
vectorised) -> featurisation + onnxruntime in a thread pool (never on the
event loop) -> JSON.

The served model is one immutable :class:`serve.bundle.Model`; a handler reads
``state.model`` once and uses that object to the end, and a reload builds the
new model completely (verify, load, warm up) before one reference assignment
swaps it in. Requests in flight finish on the model they started with.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve import __version__
from serve.bundle import BundleError, EventBatch, Model, resolve_bundle
from serve.config import Settings
from serve import schemas
from serve.schemas import (AllocateRequest, AllocateResponse, CurvesRequest, CurvesResponse, ErrorResponse,
                           ReloadRequest, ScoreRequest, ScoreResponse)
from sellerlift.schema import EVENT_TYPES, TS_MAX, TS_MIN

log = logging.getLogger("serve")

# Modules the server must never load (checked by tests through /v1/models and logged at start).
FORBIDDEN_MODULES = ("torch", "lightning", "pytorch_lightning", "hydra", "omegaconf", "mlflow", "sklearn")
RELOAD_PATH = "/v1/admin/reload"
ENDPOINTS = ("/v1/score", "/v1/promotions/curves", "/v1/promotions/allocate", "/healthz", "/readyz", "/v1/models",
             "/metrics", RELOAD_PATH, "/docs", "/openapi.json", "/redoc")
MAX_ERRORS_SHOWN = 20
# 413/408 before the body is read: close the connection rather than swallow the rest of the upload
CLOSE = [(b"connection", b"close")]
LARGE_BODY = 256 * 1024  # bytes; bodies at least this large are decoded off the event loop
_TYPE_INDEX = {t: i for i, t in enumerate(EVENT_TYPES)}


def heavy_modules_loaded() -> list[str]:
    return sorted(m for m in FORBIDDEN_MODULES if m in sys.modules)


# ------------------------------------------------------------------ errors


class ClientError(Exception):
    """A 4xx with field-level items: ``[(loc, msg, type), ...]``."""

    def __init__(self, status: int, items: list[tuple[tuple, str, str]]):
        super().__init__(items[0][1] if items else "")
        self.status, self.items = status, items


def field_name(loc) -> str:
    """('body', 'customers', 3, 'events', 0, 'ts') -> 'customers[3].events[0].ts'."""
    out = ""
    for part in loc:
        if part == "body" and out == "":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _error_body(items) -> dict:
    shown = [{"field": field_name(loc), "loc": [p if isinstance(p, int) else str(p) for p in loc], "msg": msg,
              "type": typ} for loc, msg, typ in items[:MAX_ERRORS_SHOWN]]
    if len(items) > MAX_ERRORS_SHOWN:
        shown.append({"field": "body", "loc": ["body"], "msg": f"... and {len(items) - MAX_ERRORS_SHOWN} more "
                      "error(s)", "type": "more_errors"})
    return {"detail": shown}


_UNION_TAGS = ("str", "int", "constrained-str", "float", "none")


def _pydantic_items(errors) -> list[tuple[tuple, str, str]]:
    items: list[tuple[tuple, str, str]] = []
    for e in errors:
        # drop the union-branch tags pydantic inserts, e.g. ('customer_id', 'str') -> ('customer_id',)
        loc = tuple(p for p in e.get("loc", ()) if not (isinstance(p, str) and p in _UNION_TAGS))
        msg, typ = str(e.get("msg", "invalid")), str(e.get("type", "value_error"))
        if typ == "json_invalid":  # loc is ('body', <character position>)
            pos = loc[1] if len(loc) > 1 else "?"
            loc, msg = ("body",), f"invalid JSON (at character {pos}): {e.get('ctx', {}).get('error', msg)}"
        if typ == "string_pattern_mismatch" and loc and loc[-1] in ("ts", "as_of"):
            msg, typ = "unparseable timestamp; expected ISO 8601 like 2025-03-01T12:00:00Z", "timestamp"
        if items and items[-1][0] == loc and typ.endswith("_type") and items[-1][2].endswith("_type"):
            items[-1] = (loc, f"{items[-1][1]} or {msg[0].lower()}{msg[1:]}".replace(" or Input should be", " or"),
                         items[-1][2])  # one line for a union: 'Input should be a valid string or a valid integer'
            continue
        items.append((loc, msg, typ))
    return items


# ------------------------------------------------------------------ request -> arrays


class FallBack(Exception):
    """The fast path declines a request; the pydantic path validates it again and decides (4xx or not)."""


def _parse_times(values: list[str]) -> np.ndarray:
    """ISO 8601 strings -> naive-UTC datetime64[us]; NaT where unparseable or out of the schema's range."""
    if not values:
        return np.zeros(0, dtype="datetime64[us]")
    parsed = pd.to_datetime(np.asarray(values, dtype=object), utc=True, format="ISO8601", errors="coerce")
    out = parsed.tz_localize(None).to_numpy().astype("datetime64[us]")
    return _in_range(out)


def _in_range(out: np.ndarray) -> np.ndarray:
    bad = (out < np.datetime64(TS_MIN, "us")) | (out >= np.datetime64(TS_MAX, "us"))
    out[bad] = np.datetime64("NaT")
    return out


# The common shapes, parsed vectorised: YYYY-MM-DD, then [T ]HH:MM:SS, then .fff or .ffffff, then Z.
# Each of them matches schemas.TS_PATTERN; everything else (offsets, other precisions, compact forms,
# anything invalid) goes to pandas, so the values (and NaT) are exactly those of _parse_times.
_FAST_LENGTHS = np.array([10, 19, 20, 23, 24, 26, 27])
_WIDTH = 27
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _fast_times(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[us] values, handled mask): the strings in a common shape with a valid date and time."""
    n = len(values)
    out = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    lens = np.fromiter(map(len, values), dtype=np.int64, count=n)
    idx = np.flatnonzero(np.isin(lens, _FAST_LENGTHS))
    done = np.zeros(n, dtype=bool)
    if not len(idx):
        return out, done
    try:
        raw = np.array(values if len(idx) == n else [values[i] for i in idx], dtype=f"S{_WIDTH}")
    except UnicodeEncodeError:  # non-ASCII somewhere: leave it all to pandas
        return out, done
    chars = raw.view(np.uint8).reshape(len(idx), _WIDTH)  # shorter strings are zero-padded
    col = np.ascontiguousarray(chars.T).astype(np.int64)  # col[p]: character p of every string, contiguous
    L = lens[idx]
    d = col - 48

    def digits(*pos):
        v = np.zeros(len(idx), dtype=np.int64)
        ok = np.ones(len(idx), dtype=bool)
        for p in pos:
            ok &= (d[p] >= 0) & (d[p] <= 9)
            v = v * 10 + d[p]
        return v, ok

    year, ok_y = digits(0, 1, 2, 3)
    month, ok_m = digits(5, 6)
    day, ok_d = digits(8, 9)
    hour, ok_h = digits(11, 12)
    minute, ok_mi = digits(14, 15)
    second, ok_s = digits(17, 18)
    frac3, ok_f3 = digits(20, 21, 22)
    frac6, ok_f6 = digits(20, 21, 22, 23, 24, 25)
    has_time = L >= 19
    f3, f6 = (L == 23) | (L == 24), (L == 26) | (L == 27)
    zulu = (L == 20) | (L == 24) | (L == 27)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    mi = np.clip(month, 1, 12) - 1
    dim = _DAYS_IN_MONTH[mi] + ((mi == 1) & leap)
    ok = (ok_y & ok_m & ok_d & (col[4] == 45) & (col[7] == 45) & (year // 100 >= 19) & (year // 100 <= 21)
          & (month >= 1) & (month <= 12) & (day >= 1) & (day <= dim))
    ok &= ~has_time | (((col[10] == 84) | (col[10] == 32)) & (col[13] == 58) & (col[16] == 58) & ok_h & ok_mi
                       & ok_s & (hour <= 23) & (minute <= 59) & (second <= 59))
    ok &= ~(f3 | f6) | (col[19] == 46)
    ok &= ~f3 | ok_f3
    ok &= ~f6 | ok_f6
    ok &= ~zulu | (chars[np.arange(len(idx)), L - 1] == 90)
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    us = days * 86_400_000_000
    us += np.where(has_time, hour * 3_600_000_000 + minute * 60_000_000 + second * 1_000_000, 0)
    us += np.where(f3, frac3 * 1000, 0) + np.where(f6, frac6, 0)
    good = idx[ok]
    out[good] = us[ok].astype("datetime64[us]")
    done[good] = True
    return out, done


_TS_RE = re.compile(schemas.TS_PATTERN_STRICT) if schemas.msgspec is not None else None


def _event_times(ts_str: list[str], strict: bool) -> np.ndarray:
    """Event timestamps -> datetime64[us] (NaT: unparseable / out of range).

    ``strict`` (the fast path, where msgspec did not pattern-check event times): raise FallBack when a
    string does not match the request models' timestamp pattern, so pydantic reports it as it always did.
    """
    ts, done = _fast_times(ts_str)
    if not done.all():
        rest = np.flatnonzero(~done)
        rest_str = [ts_str[i] for i in rest]
        if strict and not all(_TS_RE.match(v) for v in rest_str):
            raise FallBack
        ts[rest] = _parse_times(rest_str)
    return _in_range(ts)


@lru_cache(maxsize=4096)
def _parse_one(value: str) -> np.datetime64:
    """As-of times repeat across requests: parse each distinct string once (same parser as events)."""
    return _parse_times([value])[0]


def build_batch(req, settings: Settings) -> EventBatch:
    """Check limits and timestamps of a score/curves/allocate request and flatten it into arrays.

    ``req`` is a pydantic request model or its msgspec twin from the fast path (same attributes); with the
    latter, event timestamps are pattern-checked here first (FallBack when one does not match).
    """
    custs = req.customers
    n = len(custs)
    strict = schemas.msgspec is not None and isinstance(req, schemas.msgspec.Struct)
    events = [e for c in custs for e in c.events]
    ts_str = [e.ts for e in events]
    ts = _event_times(ts_str, strict)  # first: a pattern mismatch is pydantic's 422, before any limit
    if n > settings.max_customers:
        raise ClientError(413, [(("body", "customers"), f"too many customers: {n} > {settings.max_customers} per "
                                 "request (max_customers)", "too_many_customers")])
    counts = np.fromiter((len(c.events) for c in custs), dtype=np.int64, count=n)
    over = np.flatnonzero(counts > settings.max_events_per_customer)
    if len(over):
        raise ClientError(413, [(("body", "customers", int(i), "events"),
                                 f"too many events: {int(counts[i])} > {settings.max_events_per_customer} per customer "
                                 "(max_events_per_customer)", "too_many_events") for i in over])

    # as-of per customer: its own, else the request's
    as_of_str = [c.as_of if c.as_of is not None else req.as_of for c in custs]
    missing = [i for i, s in enumerate(as_of_str) if s is None]
    if missing:
        raise ClientError(422, [(("body", "customers", i, "as_of"), "missing as-of time: set it on the customer "
                                 "or as the request's as_of", "missing") for i in missing])
    as_of = np.array([_parse_one(x) for x in as_of_str], dtype="datetime64[us]")
    bad = np.flatnonzero(np.isnat(as_of))
    if len(bad):
        raise ClientError(422, [((("body", "customers", int(i), "as_of") if custs[i].as_of is not None else
                                  ("body", "as_of")), f"unparseable or out-of-range time {as_of_str[i]!r}; expected "
                                 f"ISO 8601 between {TS_MIN.date()} and {TS_MAX.date()}", "timestamp")
                                for i in bad])

    cust = np.repeat(np.arange(n, dtype=np.int64), counts)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.zeros(0, np.int64)

    def where(k):
        i = int(cust[k])
        return ("body", "customers", i, "events", int(k - start[i]), "ts")

    bad = np.flatnonzero(np.isnat(ts))
    if len(bad):
        raise ClientError(422, [(where(k), f"unparseable or out-of-range timestamp {ts_str[k]!r}; expected ISO "
                                 f"8601 between {TS_MIN.date()} and {TS_MAX.date()}", "timestamp") for k in bad])
    late = np.flatnonzero(ts > as_of[cust])
    if len(late):
        raise ClientError(422, [(where(k), f"timestamp {ts_str[k]!r} is after the customer's as-of time "
                                 f"{as_of_str[int(cust[k])]!r}", "after_as_of") for k in late])
    type_code = np.fromiter((_TYPE_INDEX[e.type] for e in events), dtype=np.int8, count=len(events))
    amount = np.fromiter((e.amount for e in events), dtype=np.float64, count=len(events))
    return EventBatch(n=n, cust=cust, ts=ts, type_code=type_code, amount=amount, as_of=as_of)


def _iso(t: np.datetime64) -> str:
    return pd.Timestamp(t).tz_localize("UTC").isoformat().replace("+00:00", "Z")


def _iso_each(values: np.ndarray) -> list[str]:
    """_iso of every element, formatting each distinct time once (requests usually share one as-of)."""
    uniq, inv = np.unique(values, return_inverse=True)
    names = [_iso(u) for u in uniq]
    return [names[i] for i in inv.reshape(-1).tolist()]


# ------------------------------------------------------------------ the fast path: msgspec in, msgspec out


def _numpy_scalar(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


_ENCODER = schemas.msgspec.json.Encoder(enc_hook=_numpy_scalar) if schemas.msgspec is not None else None


def json_response(payload, status_code: int = 200) -> Response:
    """JSON bytes by msgspec (a few times faster than the json module); what it cannot encode goes by json."""
    if _ENCODER is not None:
        try:
            return Response(_ENCODER.encode(payload), status_code=status_code, media_type="application/json")
        except (TypeError, OverflowError, ValueError, schemas.msgspec.EncodeError):
            pass  # e.g. an integer id beyond 64 bits
    return JSONResponse(payload, status_code=status_code)


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule for parsing a body as JSON: application/json or application/*+json."""
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def fast_body(struct_type):
    """Mark an endpoint for :class:`FastRoute`: decode its body as ``struct_type`` (a msgspec Struct)."""
    def mark(fn):
        fn.fast_body = struct_type
        return fn
    return mark


class FastRoute(APIRoute):
    """An APIRoute that first tries msgspec on a JSON body, and otherwise does exactly what FastAPI does.

    The OpenAPI schema, the pydantic request models and every error are FastAPI's own: the fast path
    only handles bodies that its (stricter) msgspec twin of the request model accepts and hands the
    endpoint an object with the same attributes. Anything it does not accept (wrong JSON, wrong types,
    NaN, a timestamp off the pattern, non-JSON content types, ...) goes through the unchanged FastAPI
    handler, which parses the body again and answers with the usual 4xx.
    """

    def get_route_handler(self):
        slow = super().get_route_handler()
        struct_type = getattr(self.endpoint, "fast_body", None)
        if struct_type is None or schemas.msgspec is None:
            return slow
        decoder = schemas.msgspec.json.Decoder(struct_type)
        endpoint = self.endpoint
        deps = [d.dependency for d in self.dependencies]  # plain no-argument checks (e.g. 503 without DIPN)

        async def handler(request):
            if not _is_json(request.headers.get("content-type")):
                return await slow(request)
            for dep in deps:
                dep()
            body = await request.body()
            try:
                # a large body decodes in a thread, so it does not hold up the event loop (other clients)
                req = decoder.decode(body) if len(body) < LARGE_BODY else await asyncio.to_thread(decoder.decode, body)
            except Exception:  # noqa: BLE001  (invalid JSON or types, bad UTF-8, ...): FastAPI's path decides
                return await slow(request)
            try:
                return await endpoint(req)
            except FallBack:
                return await slow(request)

        return handler


# ------------------------------------------------------------------ metrics


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("sellerlift_requests", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=r)
        self.errors = Counter("sellerlift_request_errors", "responses with status >= 400 by endpoint and class",
                              ["endpoint", "kind"], registry=r)
        self.latency = Histogram("sellerlift_request_latency_seconds", "request latency by endpoint", ["endpoint"],
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=r)
        self.in_flight = Gauge("sellerlift_requests_in_flight", "requests being served", registry=r)
        self.customers = Counter("sellerlift_customers", "customers processed by endpoint", ["endpoint"], registry=r)
        self.inference = Histogram("sellerlift_inference_seconds", "featurisation + onnxruntime time per request",
                                   ["endpoint"], buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5),
                                   registry=r)
        self.reloads = Counter("sellerlift_reloads", "bundle reloads by result", ["result"], registry=r)
        self.model_info = Gauge("sellerlift_model_info", "the bundle being served (value 1)", ["version", "run_id"],
                                registry=r)

    def set_model(self, model: Model) -> None:
        self.model_info.clear()
        self.model_info.labels(model.version, str(model.run_id)).set(1)


# ------------------------------------------------------------------ the gate: auth, body limit, metrics


def _token_ok(header: bytes | None, tokens: list[str]) -> bool:
    if not header or not tokens:
        return False
    scheme, _, given = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    given_b = given.strip().encode()
    ok = False
    for t in tokens:  # compare against every token, constant time each
        ok |= hmac.compare_digest(given_b, t.encode())
    return ok


class Gate:
    """Pure ASGI middleware: bearer tokens, the body-size limit and Prometheus metrics, before any parsing."""

    def __init__(self, app, state: "State"):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st = self.state
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status = {"code": 500}
        t0 = time.perf_counter()
        st.metrics.in_flight.inc()

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization")
            s = st.settings
            if path == RELOAD_PATH:
                if not s.admin_token:
                    return await _json(send_wrapped, 403, {"detail": "reload is disabled: no admin token configured"})
                if not _token_ok(auth, [s.admin_token]):
                    return await _json(send_wrapped, 401, {"detail": "unauthorized"},
                                       [(b"www-authenticate", b"Bearer")])
            elif s.api_token and not _token_ok(auth, [t for t in (s.api_token, s.admin_token) if t]):
                return await _json(send_wrapped, 401, {"detail": "unauthorized"}, [(b"www-authenticate", b"Bearer")])

            limit = s.max_body_bytes
            length = headers.get(b"content-length")
            if length is not None:
                try:
                    declared = int(length)
                except ValueError:
                    return await _json(send_wrapped, 400, {"detail": "invalid Content-Length header"})
                if declared > limit:
                    return await _json(send_wrapped, 413, _too_large(limit), CLOSE)
            # Read the body (bounded) once, then replay it: a chunked upload cannot exceed the limit either,
            # and a client that trickles its body (slowloris) is cut off after body_timeout seconds (408).
            chunks, size, more = [], 0, True
            try:
                async with asyncio.timeout(s.body_timeout):
                    while more:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            status["code"] = 499  # client went away
                            return
                        chunk = message.get("body", b"")
                        size += len(chunk)
                        if size > limit:
                            return await _json(send_wrapped, 413, _too_large(limit), CLOSE)
                        chunks.append(chunk)
                        more = message.get("more_body", False)
            except TimeoutError:
                return await _json(send_wrapped, 408, {"detail": f"request body not received within "
                                                       f"{s.body_timeout} s (body_timeout)"}, CLOSE)
            body = b"".join(chunks)
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_wrapped)
        finally:
            st.metrics.in_flight.dec()
            code = status["code"]
            m = st.metrics
            m.requests.labels(endpoint, scope.get("method", ""), str(code)).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)
            if code >= 400:
                m.errors.labels(endpoint, "client" if code < 500 else "server").inc()


def _too_large(limit: int) -> dict:
    return {"detail": [{"field": "body", "loc": ["body"], "msg": f"request body larger than {limit} bytes "
                        "(max_body_bytes)", "type": "body_too_large"}]}


async def _json(send, status: int, payload: dict, extra_headers=()):
    resp = JSONResponse(payload, status_code=status)
    await send({"type": "http.response.start", "status": status,
                "headers": [*resp.raw_headers, *extra_headers]})
    await send({"type": "http.response.body", "body": resp.body})


# ------------------------------------------------------------------ the app


class State:
    def __init__(self, settings: Settings, model: Model | None):
        self.settings = settings
        self.model = model  # swapped atomically by reload; never mutated
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="serve-infer")
        self.reload_lock = asyncio.Lock()
        if model is not None:
            self.metrics.set_model(model)


def load_model(settings: Settings, bundle: str | Path | None = None) -> Model:
    if bundle is None:
        path, source = resolve_bundle(settings)
    else:
        path, source = Path(bundle), "reload request"
    return Model.load(path, source=source, ort_threads=settings.ort_intra_op_threads)


DESCRIPTION = """
Scores customers from raw events (intent, churn, RFM segment), returns promotion
response curves and allocates a discount budget, from one verified sellerlift
bundle, on onnxruntime (CPU), without torch.

* Errors: every 4xx names the offending field (`detail[].field`, e.g.
  `customers[3].events[0].ts`). 413: more customers / events / bytes than the
  configured limits. 401: missing or wrong bearer token (when configured).
* Times are ISO 8601; an offset is converted to UTC, no offset means UTC.
  Events at exactly `as_of` are accepted but not used (features see `ts < as_of`);
  events after `as_of` are rejected.
"""

_ERRORS = {401: {"description": "missing or wrong bearer token"},
           413: {"model": ErrorResponse, "description": "over a configured limit"},
           422: {"model": ErrorResponse, "description": "invalid input; `detail[].field` names the field"},
           503: {"description": "no model loaded / no promotion model in this bundle"}}


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process (``workers > 1``): settings from SELLERLIFT_* variables."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(settings)


def create_app(settings: Settings | None = None, model: Model | None = None) -> FastAPI:
    """Build the app. Loads (verifies and warms) the bundle now unless ``model`` is given; raises BundleError."""
    settings = settings or Settings.from_env()
    if model is None:
        model = load_model(settings)
    state = State(settings, model)

    @asynccontextmanager
    async def lifespan(app):
        log.info("serving bundle %s (version %s); heavy modules loaded: %s", state.model.bundle_dir,
                 state.model.version, heavy_modules_loaded() or "none")
        yield
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="sellerlift inference server", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, openapi_tags=[
                      {"name": "scoring", "description": "intent, churn and segments from raw events"},
                      {"name": "promotions", "description": "response curves and budgeted allocation"},
                      {"name": "operations", "description": "health, readiness, model info, metrics, reload"}])
    app.router.route_class = FastRoute  # the endpoints below: msgspec fast path, FastAPI's path otherwise
    app.state.serve = state
    app.add_middleware(Gate, state=state)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        return JSONResponse(_error_body(_pydantic_items(exc.errors())), status_code=422)

    @app.exception_handler(ClientError)
    async def _client(request, exc: ClientError):
        return JSONResponse(_error_body(exc.items), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a JSON body that is not UTF-8/16/32 text: malformed JSON like any other (422)
            return JSONResponse(_error_body([(("body",), "invalid JSON: the body is not UTF-8 text", "json_invalid")]),
                                status_code=422)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    async def run(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(state.executor, partial(fn, *args))

    def current() -> Model:
        if state.model is None:
            raise StarletteHTTPException(503, "no model loaded")
        return state.model

    def ref(model: Model) -> dict:
        return {"version": model.version, "run_id": model.run_id}

    # -------------------------------------------------------------- scoring
    def _score(model: Model, batch: EventBatch):
        feats = model.features(batch)
        out = model.run_sequence(feats)
        return out, model.assign_segments(feats)

    @app.post("/v1/score", response_model=ScoreResponse, tags=["scoring"], responses=_ERRORS,
              summary="intent, churn and segment per customer from raw events")
    @fast_body(getattr(schemas, "FastScoreRequest", None))
    async def score(req: ScoreRequest) -> Response:
        model = current()
        batch = await run(build_batch, req, settings)  # off the event loop: large requests would block it
        if batch.n == 0:
            return json_response({"model": ref(model), "results": []})
        t0 = time.perf_counter()
        out, seg = await run(_score, model, batch)
        state.metrics.inference.labels("/v1/score").observe(time.perf_counter() - t0)
        state.metrics.customers.labels("/v1/score").inc(batch.n)
        used = np.bincount(batch.cust[batch.ts < batch.as_of[batch.cust]], minlength=batch.n)
        intent, churn = out["intent_7d"].tolist(), out["churn_90d"].tolist()
        seg_id, seg_name = (seg[0].tolist(), seg[1].tolist()) if seg is not None else ([None] * batch.n,) * 2
        as_of, used = _iso_each(batch.as_of), used.tolist()
        results = [{"customer_id": c.customer_id, "as_of": as_of[i], "intent_7d": intent[i],
                    "churn_90d": churn[i], "segment": seg_name[i], "segment_id": seg_id[i],
                    "n_events": used[i], "cold_start": used[i] == 0}
                   for i, c in enumerate(req.customers)]
        return json_response({"model": ref(model), "results": results})

    # -------------------------------------------------------------- promotions
    def need_promotions(model: Model) -> None:
        if model.dipn is None:
            raise StarletteHTTPException(503, "no promotion model in this bundle")

    def promotions_available() -> None:
        """Route dependency: runs before body validation, so a bundle without DIPN answers 503 first."""
        need_promotions(current())

    def _curves(model: Model, batch: EventBatch):
        feats = model.features(batch)
        return model.run_curves(feats, model.run_sequence(feats))

    @app.post("/v1/promotions/curves", response_model=CurvesResponse, tags=["promotions"], responses=_ERRORS,
              dependencies=[Depends(promotions_available)],
              summary="conversion probability at each discount level, and uplift over no discount")
    @fast_body(getattr(schemas, "FastScoreRequest", None))
    async def curves(req: CurvesRequest) -> Response:
        model = current()
        need_promotions(model)
        batch = await run(build_batch, req, settings)  # off the event loop: large requests would block it
        if batch.n == 0:
            return json_response({"model": ref(model), "discount_levels": list(model.levels), "results": []})
        t0 = time.perf_counter()
        curve = await run(_curves, model, batch)
        state.metrics.inference.labels("/v1/promotions/curves").observe(time.perf_counter() - t0)
        state.metrics.customers.labels("/v1/promotions/curves").inc(batch.n)
        conv, up = curve.tolist(), (curve - curve[:, :1]).tolist()
        return json_response({"model": ref(model), "discount_levels": list(model.levels),
                              "results": [{"customer_id": c.customer_id, "conversion": conv[i], "uplift": up[i]}
                                          for i, c in enumerate(req.customers)]})

    def _allocate(model: Model, batch: EventBatch, value, margin, sellers, budget, seller_budgets):
        from sellerlift.allocate import allocate_lagrangian, incremental_profit_and_spend

        p = _curves(model, batch).astype(np.float64)
        try:
            a = allocate_lagrangian(p, value, margin, list(model.levels), budget=budget,
                                    seller=sellers, seller_budgets=seller_budgets)
        except ValueError as err:  # inputs are checked beforehand; this is the allocator's own word
            raise ClientError(422, [(("body",), f"infeasible or invalid allocation request: {err}",
                                     "allocation")]) from None
        profit, spend = incremental_profit_and_spend(p, value, margin, list(model.levels))
        rows = np.arange(len(value))
        return a, p[rows, a.level_index], spend[rows, a.level_index], profit[rows, a.level_index]

    @app.post("/v1/promotions/allocate", response_model=AllocateResponse, tags=["promotions"], responses=_ERRORS,
              dependencies=[Depends(promotions_available)],
              summary="who gets which discount under a total (and per-seller) budget")
    @fast_body(getattr(schemas, "FastAllocateRequest", None))
    async def allocate(req: AllocateRequest) -> Response:
        model = current()
        need_promotions(model)
        batch = await run(build_batch, req, settings)  # off the event loop: large requests would block it
        if req.budget is None and req.seller_budgets is None:
            raise ClientError(422, [(("body", "budget"), "give a total budget, per-seller budgets, or both",
                                     "missing")])
        sellers = None
        sb = None
        if req.seller_budgets is not None:
            items = []
            for i, c in enumerate(req.customers):
                if c.seller_id is None:
                    items.append((("body", "customers", i, "seller_id"), "required when seller_budgets is given",
                                  "missing"))
            for k, v in req.seller_budgets.items():
                if not (np.isfinite(v) and v >= 0):
                    items.append((("body", "seller_budgets", k), "expected a finite budget >= 0", "budget"))
            if items:
                raise ClientError(422, items)
            sellers = np.array([str(c.seller_id) for c in req.customers], dtype=object)
            known = set(sellers.tolist())
            items = [(("body", "seller_budgets", k), f"no customer of seller {k!r} in this request", "unknown_seller")
                     for k in req.seller_budgets if k not in known]
            items += [(("body", "seller_budgets"), f"no budget for seller {s!r} (its customers: "
                       f"customers[{int(np.flatnonzero(sellers == s)[0])}], ...)", "missing_seller_budget")
                      for s in sorted(known) if s not in req.seller_budgets]
            if items:
                raise ClientError(422, items)
            sb = {k: float(v) for k, v in req.seller_budgets.items()}
        if batch.n == 0:
            return json_response({"model": ref(model), "discount_levels": list(model.levels), "results": [],
                                  "totals": {"spend": 0.0, "incremental_profit": 0.0, "roi": 0.0, "bound": 0.0,
                                             "gap": 0.0, "status": "optimal", "customers_with_discount": 0,
                                             "seller_spend": {} if sb is not None else None}})
        value = np.array([c.value for c in req.customers], dtype=np.float64)
        margin = np.array([c.margin for c in req.customers], dtype=np.float64)
        t0 = time.perf_counter()
        a, conv, spend, profit = await run(_allocate, model, batch, value, margin, sellers, req.budget, sb)
        state.metrics.inference.labels("/v1/promotions/allocate").observe(time.perf_counter() - t0)
        state.metrics.customers.labels("/v1/promotions/allocate").inc(batch.n)
        lv, conv, spend, profit = a.level_pct.tolist(), conv.tolist(), spend.tolist(), profit.tolist()
        totals = {"spend": a.spend, "incremental_profit": a.profit, "roi": a.roi,
                  "bound": float(a.bound) if np.isfinite(a.bound) else a.profit, "gap": a.gap, "status": a.status,
                  "customers_with_discount": int((a.level_index > 0).sum()),
                  "seller_spend": {str(k): float(v) for k, v in a.seller_spend.items()} if a.seller_spend else None}
        return json_response({"model": ref(model), "discount_levels": list(model.levels), "totals": totals,
                              "results": [{"customer_id": c.customer_id, "seller_id": c.seller_id, "level_pct": lv[i],
                                           "conversion": conv[i], "expected_spend": spend[i],
                                           "expected_incremental_profit": profit[i]}
                                          for i, c in enumerate(req.customers)]})

    # -------------------------------------------------------------- operations
    @app.get("/healthz", tags=["operations"], summary="the process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="a verified model is loaded and warmed up",
             responses={503: {"description": "not ready"}})
    async def readyz():
        m = state.model
        if m is None:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True, "version": m.version}

    @app.get("/v1/models", tags=["operations"], summary="the bundle being served: version, sha256s, metrics")
    async def models() -> dict:
        m = current()
        return {"model": m.describe(),
                "server": {"version": __version__, "pid": os.getpid(), "heavy_modules_loaded": heavy_modules_loaded(),
                           "limits": {k: getattr(settings, k) for k in ("max_customers", "max_events_per_customer",
                                                                         "max_body_bytes")}}}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(RELOAD_PATH, tags=["operations"], summary="verify, load and swap in a bundle without downtime",
              responses={401: {"description": "missing or wrong admin token"},
                         403: {"description": "reload disabled (no SELLERLIFT_ADMIN_TOKEN)"},
                         409: {"description": "bundle refused (e.g. sha256 mismatch); the old one keeps serving"}})
    async def reload(req: ReloadRequest | None = None):
        async with state.reload_lock:
            old = state.model
            try:
                new = await asyncio.to_thread(load_model, settings, req.bundle if req else None)
            except (BundleError, OSError) as err:
                state.metrics.reloads.labels("refused").inc()
                log.error("reload refused, still serving %s: %s", old.version if old else None, err)
                return JSONResponse({"detail": f"bundle refused: {err}",
                                     "serving": old.describe() if old else None}, status_code=409)
            state.model = new  # the swap: one reference assignment
            state.metrics.set_model(new)
            state.metrics.reloads.labels("ok").inc()
            log.info("reloaded: %s -> %s (%s)", old.version if old else None, new.version, new.bundle_dir)
        return {"reloaded": True, "previous_version": old.version if old else None, "model": new.describe()}

    return app
