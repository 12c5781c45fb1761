"""The endpoints (a FastAPI ``APIRouter``): thin async handlers, one executor call each.

A handler takes the body the gate read, hands it with the current runtime to its job in
:mod:`serve.jobs` (one executor hop: parse, validate, features, models, encode) and
returns the bytes. Bodies are not parsed by FastAPI: the OpenAPI schema of every body is
the msgspec Structs' own (:func:`serve.openapi.openapi_components`), put in by
:func:`openapi` in :mod:`serve.app`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from sellerlift.runtime import BundleError, Runtime
from serve import __version__, jobs, openapi, parsing, schemas
from serve.errors import JSON, detail_response, json_response, safe_text
from serve.gate import BODY_KEY
from serve.metrics import RELOAD_PATH
from serve.state import State, load_runtime

log = logging.getLogger("serve")
router = APIRouter()

# Modules the server must never load (checked by tests through /v1/models and logged at start).
FORBIDDEN_MODULES = ("torch", "lightning", "pytorch_lightning", "hydra", "omegaconf", "mlflow", "sklearn")


def heavy_modules_loaded() -> list[str]:
    return sorted(m for m in FORBIDDEN_MODULES if m in sys.modules)


def _json(name: str, description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": openapi.ref(name)}}}


def _body(name: str, required: bool = True) -> dict:
    return {"requestBody": {"required": required, "content": {JSON: {"schema": openapi.ref(name)}}}}


ERRORS = {
    401: {"description": "missing or wrong bearer token"},
    413: _json("ErrorResponse", "over a configured limit (customers, events per customer, body bytes)"),
    415: _json("ErrorResponse", "not a JSON body (Content-Type), or a compressed one (Content-Encoding)"),
    422: _json("ErrorResponse", "invalid input; `detail[].field` names the field"),
    503: {"description": "no model loaded / no promotion model in this bundle"},
}


def _state(request: Request) -> State:
    return request.app.state.serve


def _current(st: State, promotions: bool = False) -> Runtime:
    rt = st.runtime
    if rt is None:
        raise StarletteHTTPException(503, "no model loaded")
    if promotions and rt.promotion is None:
        raise StarletteHTTPException(503, "no promotion model in this bundle")
    return rt


async def _infer(request: Request, job, promotions: bool = False) -> Response:
    st = _state(request)
    rt = _current(st, promotions)  # read once: a reload during the request does not change it
    out = await st.run(job, rt, request.scope.get(BODY_KEY, b""), st.settings, st.metrics)
    return Response(out, media_type=JSON)


# ------------------------------------------------------------------ scoring and promotions


@router.post(
    "/v1/score",
    tags=["scoring"],
    summary="intent, churn, customer value, loyalty and segments per customer "
    "from raw events (fields named after the bundle's horizons)",
    openapi_extra=_body("ScoreRequest"),
    responses={200: _json("ScoreResponse", "one result per customer, in request order"), **ERRORS},
)
async def score(request: Request) -> Response:
    return await _infer(request, jobs.score)


@router.post(
    "/v1/promotions/curves",
    tags=["promotions"],
    summary="conversion probability at each discount level and uplift over no discount; with the bundle's "
    "enduring model also the expected 90-day retention and value at each level",
    openapi_extra=_body("ScoreRequest"),
    responses={200: _json("CurvesResponse", "one curve per customer, in request order"), **ERRORS},
)
async def curves(request: Request) -> Response:
    return await _infer(request, jobs.curves, promotions=True)


@router.post(
    "/v1/promotions/allocate",
    tags=["promotions"],
    summary="who gets which discount under total, per-seller and per-tier budgets and per-customer / "
    "per-segment caps, maximising the week's profit + weight x the enduring value",
    openapi_extra=_body("AllocateRequest"),
    responses={200: _json("AllocateResponse", "the level of every customer and the totals"), **ERRORS},
)
async def allocate(request: Request) -> Response:
    return await _infer(request, jobs.allocate, promotions=True)


# ------------------------------------------------------------------ operations


@router.get("/healthz", tags=["operations"], summary="the process is alive", responses={200: _json("Health", "alive")})
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    tags=["operations"],
    summary="ready for traffic: a verified model is loaded, not draining, the inference queue is short",
    responses={200: _json("Ready", "ready"), 503: _json("Ready", "not ready, with the reason")},
)
async def readyz(request: Request) -> Response:
    st = _state(request)
    reason = st.not_ready()
    if reason is not None:
        return json_response({"ready": False, "reason": reason}, 503)
    return json_response({"ready": True, "version": st.runtime.version})


@router.head("/healthz", include_in_schema=False)
async def healthz_head() -> Response:
    return Response(status_code=200, media_type=JSON)


@router.head("/readyz", include_in_schema=False)
async def readyz_head(request: Request) -> Response:
    return Response(status_code=503 if _state(request).not_ready() else 200, media_type=JSON)


@router.get("/v1/models", tags=["operations"], summary="the bundle being served: version, sha256s, metrics")
async def models(request: Request) -> Response:
    st = _state(request)
    s = st.settings
    return json_response(
        {
            "model": _current(st).describe(),
            "server": {
                "version": __version__,
                "pid": os.getpid(),
                "heavy_modules_loaded": heavy_modules_loaded(),
                "data": s.data or None,
                "limits": {k: getattr(s, k) for k in ("max_customers", "max_events_per_customer", "max_body_bytes")},
            },
        }
    )


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    data, ctype = _state(request).metrics.exposition()
    return Response(data, media_type=ctype)


@router.post(
    RELOAD_PATH,
    tags=["operations"],
    summary="verify, load and swap in a bundle without downtime",
    openapi_extra=_body("ReloadRequest", required=False),
    responses={
        401: {"description": "missing or wrong admin token"},
        403: {"description": "reload disabled (no SELLERLIFT_ADMIN_TOKEN)"},
        409: {
            "description": "bundle refused (outside the bundle root, sha256 mismatch, unsigned "
            "when a key is set, ...); the old one keeps serving"
        },
        415: ERRORS[415],
        422: ERRORS[422],
    },
)
async def reload(request: Request) -> Response:
    st = _state(request)
    req = await asyncio.to_thread(parsing.decode_small, request.scope.get(BODY_KEY, b""), schemas.ReloadRequest)
    async with st.reload_lock:
        old = st.runtime
        try:
            new = await asyncio.to_thread(load_runtime, st.settings, req.bundle if req else None, True)
        except (BundleError, OSError) as err:
            st.metrics.reloads.labels("refused").inc()
            log.error("reload refused, still serving %s: %s", old.version if old else None, safe_text(err, 2000))
            return detail_response(
                409, f"bundle refused: {safe_text(err, 2000)}", serving=old.describe() if old else None
            )
        st.runtime = new  # the swap: one reference assignment
        st.metrics.set_model(new)
        st.metrics.reloads.labels("ok").inc()
        log.info("reloaded: %s -> %s (%s)", old.version if old else None, new.version, new.bundle_dir)
    return json_response({"reloaded": True, "previous_version": old.version if old else None, "model": new.describe()})
