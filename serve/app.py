"""The app: the gate, the routes, the error handlers and the OpenAPI schema wired around one :class:`State`.

A request: :class:`serve.gate.Gate` (head size, tokens, content type, body limits, metrics)
-> a route of :mod:`serve.routes` -> one call in the inference pool (:mod:`serve.jobs`:
:mod:`serve.parsing` + the :class:`sellerlift.runtime.Runtime` + encoding) -> the bytes.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sellerlift.runtime import Runtime
from serve import __version__, errors, response_types, routes
from serve.config import Settings
from serve.gate import Gate
from serve.openapi import openapi_components
from serve.routes import FORBIDDEN_MODULES, heavy_modules_loaded  # noqa: F401  (part of this module's API)
from serve.state import State, install_drain_signal, load_runtime, tune_process

log = logging.getLogger("serve")

DESCRIPTION = """
Scores customers from raw events (intent, churn, customer value, a 0-1 loyalty
score, RFM and action segments), returns promotion response curves (with the
expected 90-day retention and value per level) and allocates a discount budget
(the week's profit or the 90-day profit, under budgets, tiers and caps), from one
verified sellerlift bundle, on onnxruntime (CPU), without torch. Response fields
follow the served bundle: probabilities are named after its horizons, and what a
bundle does not have (an older bundle: no value head) is not in its responses.

* Errors: every 4xx names the offending field (`detail[].field`, e.g.
  `customers[3].events[0].ts`), the value given and what was expected (at most 20
  items, then a count). 413: more customers / events / bytes than the configured
  limits. 415: not a JSON body, or a compressed one. 431: request headers too large.
  401: missing or wrong bearer token (when configured).
* Times are ISO 8601; an offset is converted to UTC, no offset means UTC.
  Events at exactly `as_of` are accepted but not used (features see `ts < as_of`);
  events after `as_of` are rejected.
* Cold start: a customer without events before `as_of` gets the bundle's calibrated
  prior (`prior: true`).
"""


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process (``workers > 1``): settings from SELLERLIFT_* variables."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    tune_process()
    return app


def create_app(settings: Settings | None = None, model: Runtime | None = None) -> FastAPI:
    """Build the app. Loads (verifies and warms) the bundle now unless ``model`` is given; raises BundleError."""
    settings = settings or Settings.from_env()
    state = State(settings, model if model is not None else load_runtime(settings))

    @asynccontextmanager
    async def lifespan(app):
        rt = state.runtime
        log.info(
            "serving bundle %s (version %s); heavy modules loaded: %s; drain on SIGTERM: %s",
            rt.bundle_dir,
            rt.version,
            heavy_modules_loaded() or "none",
            install_drain_signal(),
        )
        yield
        state.close()

    app = FastAPI(
        title="sellerlift inference server",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "scoring", "description": "intent, churn, value, loyalty and segments from raw events"},
            {"name": "promotions", "description": "response curves and budgeted allocation"},
            {"name": "operations", "description": "health, readiness, model info, metrics, reload"},
        ],
    )
    app.state.serve = state
    app.include_router(routes.router)
    errors.install(app)
    app.add_middleware(Gate, state=state)
    app.openapi = lambda: openapi(app)
    return app


def openapi(app: FastAPI) -> dict:
    """FastAPI's schema of the routes, with every body's schema from the msgspec Structs (one definition); the
    response types are those of the served bundle, rebuilt after a reload to another kind of bundle."""
    rt = app.state.serve.runtime
    types = response_types.types_for(rt) if rt is not None else None
    key = types.key if types is not None else None
    if app.openapi_schema is None or getattr(app.state, "openapi_key", None) != key:
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
        )
        spec.setdefault("components", {}).setdefault("schemas", {}).update(openapi_components(types))
        app.openapi_schema = spec
        app.state.openapi_key = key
    return app.openapi_schema
