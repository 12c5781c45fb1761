"""A raw request body -> the request's Structs and its events as arrays (:class:`EventBatch`), or a 4xx.

One validation path (msgspec and the Structs of :mod:`serve.schemas`), each step bounded before the
next one starts:

1. UTF-8; then a body of at most :data:`SMALL_BYTES` is decoded in one typed pass and its limits
   counted right after (cheaper than counting first). Any other body, and one whose pass failed,
   goes on, so that every body meets the same checks in the same order:
2. JSON syntax of the whole body and its top-level fields, in one pass that skips the customers
   array without building anything;
3. limits from cheap counts (:mod:`serve.jsonscan`, NumPy): the customers in the array (413), then
   the events of any customer whose size could hold more than the limit (413);
4. the customers, typed, in slices of at most :data:`SLICE_BYTES`, so no single call holds the
   interpreter for long; errors are collected per customer (its first; 20 shown, the rest counted);
5. timestamps and as-of times, vectorised (:mod:`serve.timestamps`), then flat arrays.

Runs in an inference thread, never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import attrgetter

import msgspec
import numpy as np

from sellerlift.runtime import EventBatch
from sellerlift.schema import EVENT_TYPES, TS_MAX, TS_MIN
from serve import jsonscan, schemas
from serve.errors import MAX_ERRORS_SHOWN, ClientError, Item, decode_error, error_path, show, translate
from serve.timestamps import TS_RE, event_times, one_time

SLICE_BYTES = 1 << 18  # customers are decoded in slices of about this many bytes (~1 ms each)
SMALL_BYTES = 1 << 19  # a body up to this size is decoded at once (~1 ms), then counted
VALUE_BYTES = 1 << 20  # an offending value is looked up (for the message) in a customer up to this size
_TYPE_INDEX = {t: i for i, t in enumerate(EVENT_TYPES)}
_RANGE = f"between {TS_MIN.date()} and {TS_MAX.date()}"
_ISO = "ISO 8601 like 2025-03-01T12:00:00Z"


# ------------------------------------------------------------------ decoders, from the one definition


def _head(req: type) -> type:
    """``req`` with ``customers`` left undecoded (msgspec.Raw): the top level, decoded in one cheap pass."""
    fields = []
    for f in msgspec.structs.fields(req):
        t = msgspec.Raw if f.name == "customers" else f.type
        fields.append((f.name, t) if f.required else (f.name, t, f.default))
    return msgspec.defstruct(req.__name__ + "Head", fields, forbid_unknown_fields=True)


class Kind:
    """Decoders for one request type (score/curves or allocate), derived from its Struct."""

    def __init__(self, req: type, customer: type):
        self.req, self.customer = req, customer
        self.full = msgspec.json.Decoder(req)
        self.head = msgspec.json.Decoder(_head(req))
        self.customers = msgspec.json.Decoder(list[customer])
        self.one = msgspec.json.Decoder(customer)
        self.allowed = {(): _names(req), ("c",): _names(customer), ("c", "e"): _names(schemas.Event)}


def _names(t: type) -> list[str]:
    return [f.name for f in msgspec.structs.fields(t)]


SCORE, ALLOCATE = Kind(schemas.ScoreRequest, schemas.Customer), Kind(schemas.AllocateRequest, schemas.AllocateCustomer)
_EVENTS_ONLY = msgspec.json.Decoder(msgspec.defstruct("EventsOnly", [("events", msgspec.Raw, msgspec.Raw(b"[]"))]))


@dataclass
class Parsed:
    head: object  # the top-level fields (as_of, budget, seller_budgets, ...)
    customers: list  # schemas.Customer / schemas.AllocateCustomer
    batch: EventBatch


# ------------------------------------------------------------------ body -> Structs


def decode(body: bytes, kind: Kind, max_customers: int, max_events: int) -> tuple[object, list]:
    """(top-level fields, customers) of a request body, checking limits first; raises ClientError."""
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ClientError(
                422,
                [
                    (
                        ("body",),
                        f"invalid JSON: the body is not UTF-8 text (byte {err.start}: "
                        f"{body[err.start : err.start + 1]!r})",
                        "json_invalid",
                    )
                ],
            ) from None
    if len(body) <= SMALL_BYTES:  # decoding it costs less than counting first; the limits come right after
        try:
            req = kind.full.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            pass  # reported as for a large body: syntax, limits, then every failing customer's first error
        else:
            if len(req.customers) <= max_customers and all(len(c.events) <= max_events for c in req.customers):
                return req, req.customers
    try:
        head = kind.head.decode(body)
    except msgspec.ValidationError as err:
        raise ClientError(422, [translate(err, kind.allowed, (), _untyped_top(body))]) from None
    except (msgspec.DecodeError, RecursionError) as err:
        raise decode_error(err, body) from None
    raw = head.customers
    spans = None
    if len(raw) > 2 * min(max_customers, max_events):  # N elements take 2N - 1 bytes: shorter is within both
        try:
            spans = jsonscan.array_spans(raw, limit=max_customers, inner=True)
        except jsonscan.TooMany as err:
            n = f"{err.count}" if err.exact else f"at least {err.count}"
            raise ClientError(
                413,
                [
                    (
                        ("customers",),
                        f"too many customers: {n} > {max_customers} per request (max_customers)",
                        "too_many_customers",
                    )
                ],
            ) from None
        if spans is not None:
            _check_events(raw, spans, max_events)
    return head, _decode_customers(raw, spans, kind)


def _untyped_top(body):
    try:
        return msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return msgspec.UNSET


def _check_events(raw, spans: jsonscan.Spans, max_events: int) -> None:
    """413 for every customer with more events than allowed, found before any customer is decoded."""
    over = []
    mv = memoryview(raw)
    for i in np.flatnonzero(spans.inner > max_events).tolist():  # an upper bound: check these exactly
        try:
            events = _EVENTS_ONLY.decode(mv[spans.starts[i] : spans.ends[i]]).events
            jsonscan.array_spans(events, limit=max_events)
        except jsonscan.TooMany as err:
            over.append((i, f"{err.count}" if err.exact else f"at least {err.count}"))
        except (msgspec.DecodeError, RecursionError):  # not an object with an events array: decoding will say
            continue
    if over:
        raise ClientError(
            413,
            [
                (
                    ("customers", i, "events"),
                    f"too many events: {n} > {max_events} per customer (max_events_per_customer)",
                    "too_many_events",
                )
                for i, n in over[:MAX_ERRORS_SHOWN]
            ],
            len(over),
        )


def _decode_customers(raw, spans, kind: Kind) -> list:
    """Typed customers, in slices of ~SLICE_BYTES; on errors, every failing customer's first one (20 shown)."""
    if spans is None or len(raw) <= SLICE_BYTES:
        try:
            return kind.customers.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as err:
            spans = spans or jsonscan.array_spans(raw)
            if spans is None:  # customers is not an array
                raise ClientError(422, [translate(err, kind.allowed, ("customers",), _small(raw))]) from None
            _collect_errors(raw, spans, kind, _failed_index(err))
    out = []
    for i, _, part in _slices(raw, spans, kind, 0):
        if isinstance(part, Exception):
            _collect_errors(raw, spans, kind, i + _failed_index(part))
        out.extend(part)
    return out


def _slices(raw, spans, kind: Kind, i: int):
    """(first, end, decoded customers or the error) for consecutive slices from customer ``i``."""
    starts, ends = spans.starts, spans.ends
    mv = memoryview(raw)
    while i < len(starts):
        j = max(i + 1, int(np.searchsorted(ends, starts[i] + SLICE_BYTES, side="right")))
        try:
            yield i, j, kind.customers.decode(b"[" + mv[starts[i] : ends[j - 1]] + b"]")
        except (msgspec.ValidationError, msgspec.DecodeError) as err:
            yield i, j, err
            return
        i = j


def _collect_errors(raw, spans, kind: Kind, i: int):
    """Raise the 422 of every failing customer from ``i`` on (one at a time now): its first error, 20 shown."""
    items, total = [], 0
    mv = memoryview(raw)
    for k in range(i, len(spans)):
        a, b = int(spans.starts[k]), int(spans.ends[k])
        try:
            kind.one.decode(mv[a:b])
        except (msgspec.ValidationError, msgspec.DecodeError) as err:
            total += 1
            if len(items) < MAX_ERRORS_SHOWN:
                items.append(_customer_error(err, kind, mv[a:b], k))
    raise ClientError(422, items, total)


def _small(raw):
    try:
        return msgspec.json.decode(raw) if len(raw) <= VALUE_BYTES else msgspec.UNSET
    except (msgspec.DecodeError, RecursionError):
        return msgspec.UNSET


def _failed_index(err: Exception) -> int:
    steps = error_path(err)
    return steps[0] if steps and isinstance(steps[0], int) else 0


def _customer_error(err, kind: Kind, raw, k: int) -> Item:
    """The item of customer ``k`` (``raw``: its bytes, where the offending value is looked up)."""
    if not isinstance(err, msgspec.ValidationError):  # (ValidationError is a DecodeError)
        return ("customers", k), f"invalid JSON: {err}", "json_invalid"
    doc = _small(raw) if len(raw) <= VALUE_BYTES else msgspec.UNSET
    return translate(err, kind.allowed, ("customers", k), doc)


def decode_small(body: bytes, typ: type):
    """A small body (reload) as ``typ``; an empty body is None. Whitespace alone is not a JSON text: a 422, as
    any other invalid JSON (the schema fuzzer's finding: ``\\r`` used to reload)."""
    if not body:
        return None
    try:
        return msgspec.json.decode(body, type=typ)
    except msgspec.ValidationError as err:
        raise ClientError(422, [translate(err, {(): _names(typ)}, (), _untyped_top(body))]) from None
    except (msgspec.DecodeError, RecursionError) as err:
        raise decode_error(err, body) from None


# ------------------------------------------------------------------ Structs -> arrays


def build_batch(head, custs: list) -> EventBatch:
    """Check timestamps and as-of times (vectorised) and flatten the customers' events into arrays."""
    n = len(custs)
    if head.as_of is not None and TS_RE.match(head.as_of) is None:  # checked even when no customer uses it
        raise ClientError(422, [(("as_of",), _bad_time(head.as_of, True), "timestamp")])
    counts = np.fromiter(map(len, map(_EVENTS, custs)), dtype=np.int64, count=n)
    events = list(chain.from_iterable(map(_EVENTS, custs)))
    ts_str = _column(events, _TS)
    try:
        return _batch(head, custs, counts, events, ts_str)
    except ClientError as err:
        # The big lists must not ride along with the error (its traceback holds _batch's frame): freed with
        # the customers, a slice at a time (release), instead of in one go when the error is done with.
        err.__traceback__ = None
        events = ts_str = None
        raise err from None


def _batch(head, custs, counts, events, ts_str) -> EventBatch:
    n = len(custs)
    ts, mismatch = event_times(ts_str)
    as_of_str = [c.as_of if c.as_of is not None else head.as_of for c in custs]
    missing = [i for i, s in enumerate(as_of_str) if s is None]
    if missing:
        raise ClientError(
            422,
            [
                (
                    ("customers", i, "as_of"),
                    "missing as-of time: set it on the customer or as the request's as_of",
                    "missing",
                )
                for i in missing[:MAX_ERRORS_SHOWN]
            ],
            len(missing),
        )
    as_of = np.array([one_time(x) for x in as_of_str], dtype="datetime64[us]")
    bad = np.flatnonzero(np.isnat(as_of))
    if len(bad):
        raise ClientError(
            422,
            [
                (
                    ("customers", int(i), "as_of") if custs[i].as_of is not None else ("as_of",),
                    _bad_time(as_of_str[i]),
                    "timestamp",
                )
                for i in bad[:MAX_ERRORS_SHOWN]
            ],
            len(bad),
        )
    cust = np.repeat(np.arange(n, dtype=np.int64), counts)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.zeros(0, np.int64)

    def where(k):
        i = int(cust[k])
        return ("customers", i, "events", int(k - start[i]), "ts")

    bad = np.flatnonzero(np.isnat(ts))
    if len(bad):
        raise ClientError(
            422,
            [(where(k), _bad_time(ts_str[k], bool(mismatch[k])), "timestamp") for k in bad[:MAX_ERRORS_SHOWN]],
            len(bad),
        )
    late = np.flatnonzero(ts > as_of[cust])
    if len(late):
        raise ClientError(
            422,
            [
                (
                    where(k),
                    f"timestamp {show(ts_str[k])} is after the customer's as-of time {show(as_of_str[int(cust[k])])}",
                    "after_as_of",
                )
                for k in late[:MAX_ERRORS_SHOWN]
            ],
            len(late),
        )
    type_code = np.concatenate(
        [np.fromiter(map(_TYPE_INDEX.__getitem__, part), np.int8, len(part)) for part in _parts(_column(events, _TYPE))]
        or [np.zeros(0, np.int8)]
    )
    amount = np.concatenate(
        [np.fromiter(part, np.float64, len(part)) for part in _parts(_column(events, _AMOUNT))] or [np.zeros(0)]
    )
    return EventBatch(n=n, cust=cust, ts=ts, type_code=type_code, amount=amount, as_of=as_of)


_EVENTS, _TS, _TYPE, _AMOUNT = (attrgetter(a) for a in ("events", "ts", "type", "amount"))
PART = 16_384  # events per step of a C-level loop over the events (each step holds the interpreter ~1 ms)


def _parts(items: list):
    return (items[i : i + PART] for i in range(0, len(items), PART))


def _column(events: list, get) -> list:
    """One attribute of every event, ``PART`` events at a time."""
    out = []
    for part in _parts(events):
        out += map(get, part)
    return out


def _bad_time(value: str, mismatch: bool | None = None) -> str:
    if (TS_RE.match(value) is None) if mismatch is None else mismatch:
        return f"unparseable timestamp {show(value)}; expected {_ISO}"
    return f"unparseable or out-of-range time {show(value)}; expected ISO 8601 {_RANGE}"


def parse(body: bytes, kind: Kind, max_customers: int, max_events: int) -> Parsed:
    head, customers = decode(body, kind, max_customers, max_events)
    try:
        return Parsed(head, customers, build_batch(head, customers))
    except ClientError:
        release(customers)
        raise


def release(customers: list, events: int = 16_384) -> None:
    """Empty a list of decoded customers about ``events`` events at a time.

    Freeing a few hundred thousand decoded events in one go is one C loop that holds the interpreter
    for tens of milliseconds (every other thread, the event loop included, waits); slice by slice it
    lets them in between.
    """
    while customers:
        k, n = len(customers), 0
        while k and n < events:
            k -= 1
            n += len(customers[k].events) + 1
        del customers[k:]
