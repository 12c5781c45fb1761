"""Structure of a JSON text without decoding it: element spans of an array, nesting, the path at a byte offset.

NumPy over the raw bytes (a few vectorised passes; most of them release the GIL), so
the server can count the customers of a 14 MB body, or the events of one customer,
before decoding any of it, and can name the field where a JSON syntax error sits. The
input must be syntactically valid JSON (msgspec checks that first) except for
:func:`path_at`, which only needs the bytes before the offset.
"""

from __future__ import annotations

import msgspec
import numpy as np

QUOTE, BACKSLASH, COMMA, COLON = 0x22, 0x5C, 0x2C, 0x3A
OPEN, CLOSE = 0x7B, 0x7D  # '{' and '}'; '[' and ']' map onto them with | 0x20
MAX_PATH_LEVELS = 32  # path_at names at most this many levels


CHUNK = 1 << 20  # bytes per vectorised step: bounds the temporaries and lets a count stop early


def _quotes(b: np.ndarray) -> np.ndarray:
    """Unescaped '"' of ``b`` (a quote is escaped when an odd run of backslashes precedes it)."""
    quote = b == QUOTE
    bs = np.flatnonzero(b == BACKSLASH)
    if bs.size:
        brk = np.flatnonzero(np.diff(bs) != 1)
        first = np.concatenate((bs[:1], bs[brk + 1]))
        last = np.concatenate((bs[brk], bs[-1:]))
        escaped = last[(last - first) % 2 == 0] + 1
        quote[escaped[escaped < b.size]] = False
    return quote


def _structure(b: np.ndarray, in_string: bool, colons: bool):
    """(positions, bytes, depth steps, in_string at the end) of the structural bytes outside strings."""
    inside = np.bitwise_xor.accumulate(_quotes(b).view(np.uint8)).view(bool)
    if in_string:
        inside = ~inside
    folded = b | 0x20
    sel = (folded == OPEN) | (folded == CLOSE) | (b == COMMA)
    if colons:
        sel |= b == COLON
    sel &= ~inside
    pos = np.flatnonzero(sel)
    ch = b[pos]
    f = ch | 0x20
    step = (f == OPEN).view(np.int8) - (f == CLOSE).view(np.int8)
    return pos, ch, step, bool(inside[-1]) if b.size else in_string


def _chunks(b: np.ndarray):
    """Chunk boundaries that never split a backslash escape."""
    lo = 0
    while lo < b.size:
        hi = min(lo + CHUNK, b.size)
        while hi < b.size and b[hi - 1] == BACKSLASH:
            hi += 1
        yield lo, hi
        lo = hi


class Tokens:
    """Structural characters outside strings of a whole text: ``pos``, ``ch`` (the byte), ``depth`` after each."""

    __slots__ = ("buf", "pos", "ch", "depth")

    def __init__(self, buf):
        b = np.frombuffer(buf, np.uint8)
        self.buf = buf
        self.pos, self.ch, step, _ = _structure(b, False, True)
        self.depth = np.cumsum(step, dtype=np.int32)

    def openers(self) -> np.ndarray:
        return (self.ch | 0x20) == OPEN


class TooMany(Exception):
    """An array has more than the allowed elements (``count``: at least this many; exact when ``exact``)."""

    def __init__(self, count: int, exact: bool):
        super().__init__(count)
        self.count, self.exact = count, exact


class Spans:
    """Elements of a JSON array: byte ``starts``/``ends`` and, per element, ``inner``: an upper bound on the
    items of its array-valued members (the commas and containers one level inside its members; for an
    object whose only array member is ``events``, at least ``len(events)``)."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray, inner: np.ndarray):
        self.starts, self.ends, self.inner = starts, ends, inner

    def __len__(self) -> int:
        return len(self.starts)


def array_spans(raw, limit: int | None = None, inner: bool = False) -> Spans | None:
    """The elements of the JSON array ``raw`` (None when it is not an array), read in chunks of CHUNK bytes.

    ``limit``: raise :class:`TooMany` as soon as there are more elements (without reading the rest).
    """
    b = np.frombuffer(raw, np.uint8)
    lead = len(bytes(b[:4096])) - len(bytes(b[:4096]).lstrip())  # msgspec.Raw has no leading space anyway
    if lead >= b.size or b[lead] != ord("["):
        return None
    seps, owners, depth, in_string, first, last = [], [], 0, False, lead + 1, None
    count = 0
    for lo, hi in _chunks(b):
        pos, ch, step, in_string = _structure(b[lo:hi], in_string, False)
        d = np.cumsum(step, dtype=np.int32) + depth
        if d.size:
            depth = int(d[-1])
            top = pos[(ch == COMMA) & (d == 1)] + lo
            if inner:
                at3 = d == 3
                hit = pos[((ch == COMMA) & at3) | (((ch | 0x20) == OPEN) & at3)] + lo
                owners.append(np.searchsorted(top, hit, side="right") + count)
            seps.append(top)
            count += len(top)
            closing = np.flatnonzero(d == 0)
            if closing.size:
                last = int(pos[closing[0]]) + lo
                break
        if limit is not None and count + 1 > limit:
            raise TooMany(count + 1, False)
    sep = np.concatenate(seps) if seps else np.zeros(0, np.int64)
    if last is None:
        return None
    if not sep.size and not (b[first:last] > 0x20).any():  # "[]" or "[ ]"
        return Spans(*(np.zeros(0, np.int64),) * 3)
    n = len(sep) + 1
    if limit is not None and n > limit:
        raise TooMany(n, True)
    counts = np.bincount(np.concatenate(owners), minlength=n) if inner and owners else np.zeros(n, np.int64)
    return Spans(
        np.concatenate(([first], sep + 1)).astype(np.int64), np.concatenate((sep, [last])).astype(np.int64), counts[:n]
    )


def _key_before(buf, tok: Tokens, colon: int) -> str | None:
    """The member name before the ':' token at index ``colon`` (a JSON string, escapes decoded)."""
    start = int(tok.pos[colon - 1]) + 1 if colon > 0 else 0
    raw = bytes(memoryview(buf)[start : int(tok.pos[colon])]).strip()
    try:
        key = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return key if isinstance(key, str) else None


def path_at(buf, offset: int, tok: Tokens | None = None) -> tuple:
    """The JSON path (``("customers", 3, "events", 0, "amount")``) of the value at byte ``offset``.

    Works on a text that is valid up to ``offset`` (e.g. where a decoder stopped at ``NaN``).
    """
    tok = tok or Tokens(memoryview(buf)[:offset])  # only what comes before matters
    k = int(np.searchsorted(tok.pos, offset))  # tokens before the offset
    if k == 0:
        return ()
    ch, depth = tok.ch[:k], tok.depth[:k]
    oi = np.flatnonzero(tok.openers()[:k])  # the open containers: the last opener at each level
    od = depth[oi]
    level = min(int(depth[-1]), MAX_PATH_LEVELS)
    chain = []
    for j in range(1, level + 1):
        at = oi[od == j]
        if not at.size:
            break
        chain.append(int(at[-1]))
    loc: list = []
    for n, i in enumerate(chain):
        j = n + 1
        end = chain[n + 1] if n + 1 < len(chain) else k
        here = depth[i:end] == j
        if ch[i] == ord("["):
            loc.append(int(np.count_nonzero((ch[i:end] == COMMA) & here)))
            continue
        colons = np.flatnonzero((ch[i:end] == COLON) & here)
        commas = np.flatnonzero((ch[i:end] == COMMA) & here)
        if not colons.size or (commas.size and commas[-1] > colons[-1]):
            break  # at a member name, not inside a value
        key = _key_before(buf, tok, i + int(colons[-1]))
        if key is None:
            break
        loc.append(key)
    return tuple(loc)


def line_col(buf, offset: int) -> tuple[int, int]:
    head = bytes(memoryview(buf)[:offset])
    line = head.count(b"\n") + 1
    return line, offset - (head.rfind(b"\n") + 1) + 1
