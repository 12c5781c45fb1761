"""The gate: pure ASGI middleware in front of every route, before anything is parsed.

In order: the size of the request head (431), bearer tokens (401/403), for the JSON
endpoints the content type and encoding (415), the declared and the actual body size
(413, also for a chunked upload) and the body deadline (408); then the body, read once
and bounded, is handed to the route. Every request is counted in the metrics, with
labels from known sets only. A bug below the gate becomes one logged traceback and a
500 (the connection stays usable), never a dropped connection.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from serve.errors import detail_response, error_response, safe_text
from serve.metrics import RELOAD_PATH
from serve.state import TRIM_AFTER_BYTES, State, trim_memory

log = logging.getLogger("serve")

BODY_KEY = "sellerlift.body"  # scope key of the request body read by the gate
JSON_PATHS = frozenset(("/v1/score", "/v1/promotions/curves", "/v1/promotions/allocate", RELOAD_PATH))
CLOSE = {"connection": "close"}  # refused before the body was read: close rather than swallow the upload


def _token_ok(header: bytes | None, tokens: list[str]) -> bool:
    if not header or not tokens:
        return False
    scheme, _, given = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    given_b = given.strip().encode("latin-1")
    ok = False
    for t in tokens:  # compare against every token, constant time each
        ok |= hmac.compare_digest(given_b, t.encode())
    return ok


def is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def head_bytes(scope) -> int:
    """Request line + headers, as they came in (near enough: ': ' and CRLF counted)."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return line + 12 + sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or ())


class Gate:
    def __init__(self, app, state: State):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500, "started": False}
        t0 = time.perf_counter()
        metrics = self.state.metrics
        metrics.in_flight.inc()

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        try:
            await self._gate(scope, receive, send_wrapped, status)
        except Exception:
            log.exception("internal error on %s", safe_text(scope.get("path", ""), 200))
            if status["started"]:
                raise  # the response is half sent: the connection cannot be reused
            await _send(send_wrapped, detail_response(500, "internal server error"))
        finally:
            metrics.in_flight.dec()
            metrics.record(scope.get("path", ""), scope.get("method", ""), status["code"], time.perf_counter() - t0)

    async def _gate(self, scope, receive, send, status) -> None:
        s = self.state.settings
        size = head_bytes(scope)
        if size > s.max_header_bytes:
            return await _send(
                send,
                detail_response(
                    431,
                    f"request line and headers too large: {size} bytes > {s.max_header_bytes} "
                    "(h11_max_incomplete_event_size)",
                    CLOSE,
                ),
            )
        headers = dict(scope.get("headers") or ())
        path = scope["path"]
        auth = headers.get(b"authorization")
        unauthorized = detail_response(401, "unauthorized", {"www-authenticate": "Bearer"})
        if path == RELOAD_PATH:
            if not s.admin_token:
                return await _send(send, detail_response(403, "reload is disabled: no admin token configured"))
            if not _token_ok(auth, [s.admin_token]):
                return await _send(send, unauthorized)
        elif s.api_token and not _token_ok(auth, [t for t in (s.api_token, s.admin_token) if t]):
            return await _send(send, unauthorized)

        if path in JSON_PATHS and scope.get("method") == "POST":
            encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip()
            if encoding.lower() not in ("", "identity"):
                return await _send(
                    send,
                    _unsupported(
                        f"Content-Encoding {encoding!r} is not supported: send the "
                        "JSON body uncompressed (Content-Encoding: identity)"
                    ),
                )
            ctype = headers.get(b"content-type")
            if ctype is not None and not is_json(ctype.decode("latin-1")):
                return await _send(
                    send,
                    _unsupported(
                        f"Content-Type {ctype.decode('latin-1')!r} is not supported: send the body as application/json"
                    ),
                )
        body = await self._body(headers, receive, send, status)
        if body is None:
            return
        scope[BODY_KEY] = body
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, send)
        finally:
            if len(body) >= TRIM_AFTER_BYTES:  # the body and its copies are gone now: return the memory
                scope.pop(BODY_KEY, None)
                body = None
                await asyncio.to_thread(trim_memory)

    async def _body(self, headers, receive, send, status) -> bytes | None:
        """The whole body, bounded by max_body_bytes and body_timeout; None when an answer was sent instead."""
        s = self.state.settings
        limit = s.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send(send, detail_response(400, "invalid Content-Length header"))
                return None
            if declared > limit:
                await _send(send, _too_large(limit))
                return None
        chunks, size, more = [], 0, True
        try:  # a chunked upload cannot exceed the limit either; a trickling client is cut off (408)
            async with asyncio.timeout(s.body_timeout):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        status["code"] = 499  # client went away
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await _send(send, _too_large(limit))
                        return None
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            await _send(
                send, detail_response(408, f"request body not received within {s.body_timeout} s (body_timeout)", CLOSE)
            )
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int):
    return error_response(
        413, [(("body",), f"request body larger than {limit} bytes (max_body_bytes)", "body_too_large")], headers=CLOSE
    )


def _unsupported(msg: str):
    return error_response(415, [(("body",), msg, "unsupported_media_type")], headers=CLOSE)


async def _send(send, response) -> None:
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
