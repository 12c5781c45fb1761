"""Prometheus metrics of the server; every label takes its value from a fixed, known set.

A client controls the method, the path and (through errors) the status of its
requests; none of them reaches a label unchecked, so ``/metrics`` stays the same
size whatever is sent (an unknown method is ``other``, an unknown path ``other``).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

RELOAD_PATH = "/v1/admin/reload"
ENDPOINTS = frozenset(
    (
        "/v1/score",
        "/v1/promotions/curves",
        "/v1/promotions/allocate",
        "/healthz",
        "/readyz",
        "/v1/models",
        "/metrics",
        RELOAD_PATH,
        "/docs",
        "/openapi.json",
        "/redoc",
    )
)
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
STATUSES = frozenset((200, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 431, 499, 500, 503))
INFERENCE = ("/v1/score", "/v1/promotions/curves", "/v1/promotions/allocate")
OTHER = "other"


def endpoint_label(path: str) -> str:
    return path if path in ENDPOINTS else OTHER


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def status_label(code: int) -> str:
    return str(code) if code in STATUSES else OTHER


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "sellerlift_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.errors = Counter(
            "sellerlift_request_errors",
            "responses with status >= 400 by endpoint and class",
            ["endpoint", "kind"],
            registry=r,
        )
        self.latency = Histogram(
            "sellerlift_request_latency_seconds",
            "request latency by endpoint",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.in_flight = Gauge("sellerlift_requests_in_flight", "requests being served", registry=r)
        self.queue = Gauge("sellerlift_inference_queue", "requests waiting for an inference thread", registry=r)
        self.customers = Counter("sellerlift_customers", "customers processed by endpoint", ["endpoint"], registry=r)
        self.inference = Histogram(
            "sellerlift_inference_seconds",
            "featurisation + onnxruntime time per request",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=r,
        )
        self.reloads = Counter("sellerlift_reloads", "bundle reloads by result", ["result"], registry=r)
        self.model_info = Gauge(
            "sellerlift_model_info", "the bundle being served (value 1)", ["version", "run_id"], registry=r
        )

    def record(self, path: str, method: str, status: int, seconds: float) -> None:
        endpoint = endpoint_label(path)
        self.requests.labels(endpoint, method_label(method), status_label(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, "client" if status < 500 else "server").inc()

    def inferred(self, endpoint: str, seconds: float, customers: int) -> None:
        """One inference (``endpoint``: one of INFERENCE, set by the server, not by the client)."""
        self.inference.labels(endpoint).observe(seconds)
        self.customers.labels(endpoint).inc(customers)

    def set_model(self, runtime) -> None:
        self.model_info.clear()  # one series: the bundle being served
        self.model_info.labels(runtime.version, str(runtime.run_id)).set(1)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
