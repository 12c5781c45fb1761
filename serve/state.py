"""What one server process holds: settings, the served :class:`Runtime`, metrics, the inference pool, readiness.

The served runtime is one immutable object; a handler reads ``state.runtime`` once and
uses that object to the end, and a reload builds the new one completely (verify, load,
warm up) before one reference assignment swaps it in. Requests in flight finish on the
runtime they started with.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import itertools
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sellerlift.runtime import BundleError, Runtime
from sellerlift.runtime.bundle import (
    MANIFEST,
    check_bundle_data,
    default_registry_db,
    find_bundle,
    inside,
    registered_model_name,
    registry_bundle,
)
from serve.config import Settings
from serve.metrics import Metrics

log = logging.getLogger("serve")

DRAINING = threading.Event()  # set when this process has been told to stop (SIGTERM/SIGINT)
# The event loop and the inference threads share one interpreter lock. A thread that wants it waits for
# up to this long each time (Python's default is 5 ms, and a /healthz answer needs it several times over).
SWITCH_INTERVAL_S = 0.001
TRIM_AFTER_BYTES = 1 << 20  # after a request body this large, hand freed heap memory back to the OS


def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "malloc_trim") else None
    except OSError:  # not glibc
        return None


_LIBC = _libc()


def trim_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``); nothing elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def tune_process() -> None:
    """Interpreter settings of a server process: short lock hand-over, startup objects out of the GC's way."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()  # what was loaded at start is never garbage: full collections need not walk it again


class State:
    def __init__(self, settings: Settings, runtime: Runtime | None):
        self.settings = settings
        self.runtime = runtime  # swapped by reload; never mutated
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="serve-infer")
        self.reload_lock = asyncio.Lock()
        self.draining = False
        self._submitted = 0  # jobs handed to the pool (event loop thread only)
        self._started = itertools.count()  # jobs a thread has picked up (next() is atomic)
        self._picked = 0
        self.metrics.queue.set_function(self.queue_depth)
        if runtime is not None:
            self.metrics.set_model(runtime)

    # ---------------------------------------------------------- the inference pool
    def queue_depth(self) -> int:
        """Requests waiting for an inference thread (submitted, not yet started)."""
        return max(0, self._submitted - self._picked)

    async def run(self, fn, *args):
        """``fn(*args)`` in the inference pool: the one executor hop of a request."""
        started = False

        def call():
            nonlocal started
            started = True
            self._picked = next(self._started) + 1
            return fn(*args)

        self._submitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, call)
        finally:
            if not started:  # cancelled while waiting: it no longer counts as queued
                self._picked = next(self._started) + 1

    def is_draining(self) -> bool:
        return self.draining or DRAINING.is_set()

    def not_ready(self) -> str | None:
        """Why the server should get no new traffic now, or None."""
        if self.is_draining():
            return "draining: the server is shutting down"
        if self.runtime is None:
            return "no model loaded"
        depth, limit = self.queue_depth(), self.settings.max_queue_depth
        if depth > limit:
            return f"inference queue {depth} > max_queue_depth {limit}"
        return None

    def close(self) -> None:
        self.draining = True
        self.executor.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------ which bundle


def load_runtime(settings: Settings, bundle: str | None = None, reload: bool = False) -> Runtime:
    """Verify, load and warm a bundle; raises :class:`BundleError`.

    At start (and on a reload without a bundle): the configured choice (given / the data set's registry alias /
    the newest bundle trained on the data set). A reload that names one: ``@alias`` of the data set's registered
    model, or a directory inside ``bundles_dir``. Every path checks that the bundle was trained on the server's
    data set (``settings.data``), naming both when it was not.
    """
    data = settings.data or None
    if bundle is None:
        path, source = find_bundle(
            settings.bundle,
            settings.bundles_dir,
            settings.registry_db,
            settings.registered_model,
            settings.model_alias,
            data=data,
        )
    elif bundle.startswith("@"):
        path, source = _registry(settings, bundle[1:]), f"reload request: registry alias {bundle}"
    else:
        path, source = inside(bundle, settings.bundles_dir), "reload request"
    check_bundle_data(path, data, f"the server's data set (--data / SELLERLIFT_DATA={data})")
    if reload and bundle is None:
        source = f"reload: {source}"
    return Runtime.load(path, source=source, threads=settings.ort_intra_op_threads)


def _registry(settings: Settings, alias: str) -> Path:
    db = Path(settings.registry_db) if settings.registry_db else default_registry_db(Path(settings.bundles_dir))
    name = registered_model_name(settings.registered_model, settings.data or None)
    found = registry_bundle(db, name, alias, Path(settings.bundles_dir)) if db else None
    if found is None or not (found[0] / MANIFEST).is_file():
        raise BundleError(
            f"{name}@{alias}: no such alias with a bundle in the registry ({db}; data set {settings.data or 'none'})"
        )
    return found[0]


# ------------------------------------------------------------------ draining


def install_drain_signal() -> bool:
    """Chain SIGTERM/SIGINT so this process reports "draining" (readiness) before the server stops.

    Called from the app's startup, after uvicorn installed its own handlers (which it restores at exit).
    Only possible in the main thread; returns whether it was installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    done = False
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous) or getattr(previous, "drains", False):
            continue  # no server handler to chain to (or already chained)

        def handler(signum, frame, previous=previous):
            DRAINING.set()
            previous(signum, frame)

        handler.drains = True
        signal.signal(sig, handler)
        done = True
    return done
