"""Server settings: command-line flags over environment variables over defaults.

Every setting has an environment variable ``SELLERLIFT_<NAME>`` (upper case),
so a container needs no command line. Tokens are read from the environment
only (never from flags: they would show up in ``ps``) and never logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

API_TOKEN_ENV = "SELLERLIFT_API_TOKEN"  # when set: every endpoint needs it
ADMIN_TOKEN_ENV = "SELLERLIFT_ADMIN_TOKEN"  # needed for POST /v1/admin/reload (disabled when unset)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _env(name: str, default, cast=str):
    raw = os.environ.get(f"SELLERLIFT_{name.upper()}")
    if raw is None or raw == "":
        return default
    if cast is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return cast(raw)


@dataclass(frozen=True)
class Settings:
    # where the bundle comes from (first that is set wins): bundle, then the
    # MLflow registry alias, then the newest complete bundle under bundles_dir.
    # A reload may name only a bundle under bundles_dir (or a registry alias).
    bundle: str | None = None
    bundles_dir: str = str(REPO_ROOT / "bundles")
    registry_db: str | None = None  # sqlite file of the MLflow store; default from MLFLOW_TRACKING_URI or mlruns/
    registered_model: str = "sellerlift-sequence"
    model_alias: str = "champion"
    # the data set served: the registry alias is that of <registered_model>-<data> (the registry is per data
    # set), the newest-bundle fallback considers only bundles trained on it, and every bundle loaded (at start
    # and on reload) must have been trained on it (sellerlift.runtime.check_bundle_data). "" (--data '' or
    # SELLERLIFT_DATA=) = no data set: no check, the registered model's name as it is.
    data: str = "simulator"
    # network
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # uvicorn processes; a reload applies to the process that receives it
    # compute: sane defaults for a 2-core box
    inference_threads: int = 2  # threads that run featurisation + onnxruntime off the event loop
    ort_intra_op_threads: int = 1  # onnxruntime threads per call
    # request limits (413 when exceeded)
    max_customers: int = 1000
    max_events_per_customer: int = 10_000
    max_body_bytes: int = 16 * 1024 * 1024
    # slow or idle clients (seconds; handed to the ASGI gate and uvicorn)
    body_timeout: int = 30  # the whole request body must arrive within this after the headers (408 after)
    timeout_keep_alive: int = 5  # an idle keep-alive connection is closed after this
    limit_concurrency: int = 0  # open connections + requests above which uvicorn answers 503; 0 = no limit
    # request line + headers, bytes: h11 answers 400 to a head still incomplete at this size, and the gate 431
    # to a complete one above it (a head that arrived in one packet)
    h11_max_incomplete_event_size: int = 16 * 1024
    # readiness: /readyz says "not ready" while more requests than this wait for an inference thread
    max_queue_depth: int = 32
    # HTTP parser: h11 enforces the header limit above; httptools (faster) has no header limit at all, so a
    # client could grow one header without bound in server memory: use it only behind a proxy that limits them
    http: str = "h11"
    # auth: tokens come from the environment only (see API_TOKEN_ENV, ADMIN_TOKEN_ENV)
    api_token: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    log_level: str = "info"

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        kw = {}
        for f in fields(cls):
            if f.name in ("api_token", "admin_token"):
                continue
            default = f.default
            cast = int if isinstance(default, int) and not isinstance(default, bool) else str
            kw[f.name] = _env(f.name, default, cast)
        if "SELLERLIFT_DATA" in os.environ:  # set and empty means "no data set", not the default
            kw["data"] = os.environ["SELLERLIFT_DATA"].strip()
        kw["api_token"] = os.environ.get(API_TOKEN_ENV) or None
        kw["admin_token"] = os.environ.get(ADMIN_TOKEN_ENV) or None
        kw.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**kw)
        s.check()
        return s

    def check(self) -> None:
        for name in (
            "max_customers",
            "max_events_per_customer",
            "max_body_bytes",
            "inference_threads",
            "ort_intra_op_threads",
            "workers",
            "body_timeout",
            "timeout_keep_alive",
            "h11_max_incomplete_event_size",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"setting {name} must be >= 1, got {getattr(self, name)}")
        if int(self.limit_concurrency) < 0:
            raise ValueError(f"setting limit_concurrency must be >= 0 (0 = no limit), got {self.limit_concurrency}")
        if int(self.max_queue_depth) < 0:
            raise ValueError(f"setting max_queue_depth must be >= 0, got {self.max_queue_depth}")
        if self.http not in ("h11", "httptools"):
            raise ValueError(f"setting http must be h11 or httptools, got {self.http!r}")
        if str(self.log_level).lower() not in LOG_LEVELS:
            raise ValueError(f"setting log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"setting port must be in 1..65535, got {self.port}")

    @property
    def max_header_bytes(self) -> int:
        return int(self.h11_max_incomplete_event_size)

    def public(self) -> dict:
        """Settings safe to show (tokens reduced to whether they are set)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("api_token", "admin_token")}
        out["api_token_set"] = self.api_token is not None
        out["admin_token_set"] = self.admin_token is not None
        return out
