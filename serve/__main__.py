"""``python -m serve [--bundle DIR] [--host H] [--port P] ...``: verify + load a bundle, then serve it.

Exit status 2 (and a one-line reason) when no bundle can be served, e.g. a
sha256 mismatch: nothing is bound in that case.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from serve.config import ADMIN_TOKEN_ENV, API_TOKEN_ENV, Settings


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Every flag also reads SELLERLIFT_<FLAG> from the environment. Tokens come "
        f"only from the environment: {API_TOKEN_ENV} (all endpoints), "
        f"{ADMIN_TOKEN_ENV} (reload).",
    )
    p.add_argument("--bundle", help="bundle directory (default: registry alias, else the newest under bundles/)")
    p.add_argument("--bundles-dir", dest="bundles_dir")
    p.add_argument("--registry-db", dest="registry_db", help="MLflow sqlite store (default: mlruns/mlflow.db)")
    p.add_argument("--model-alias", dest="model_alias", help="registry alias to serve (default: champion)")
    p.add_argument(
        "--data",
        dest="data",
        help="the data set served (default simulator): its registered model "
        "sellerlift-sequence-<data>@alias, and every bundle loaded must have "
        "been trained on it",
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, help="uvicorn processes (default 1)")
    p.add_argument("--inference-threads", dest="inference_threads", type=int)
    p.add_argument("--ort-threads", dest="ort_intra_op_threads", type=int)
    p.add_argument("--max-customers", dest="max_customers", type=int)
    p.add_argument("--max-events-per-customer", dest="max_events_per_customer", type=int)
    p.add_argument("--max-body-bytes", dest="max_body_bytes", type=int)
    p.add_argument(
        "--body-timeout",
        dest="body_timeout",
        type=int,
        help="seconds for the whole request body to arrive (408 after; default 30)",
    )
    p.add_argument(
        "--timeout-keep-alive",
        dest="timeout_keep_alive",
        type=int,
        help="seconds an idle keep-alive connection stays open (default 5)",
    )
    p.add_argument(
        "--limit-concurrency",
        dest="limit_concurrency",
        type=int,
        help="connections + requests above which uvicorn answers 503 (default 0: no limit)",
    )
    p.add_argument(
        "--h11-max-incomplete-event-size",
        dest="h11_max_incomplete_event_size",
        type=int,
        help="max bytes of request line + headers (default 16384)",
    )
    p.add_argument(
        "--max-queue-depth",
        dest="max_queue_depth",
        type=int,
        help="/readyz says not ready while more requests than this wait for inference (default 32)",
    )
    p.add_argument(
        "--http",
        dest="http",
        choices=("h11", "httptools"),
        help="HTTP parser (default h11, which enforces the header limit; httptools has none)",
    )
    p.add_argument("--log-level", dest="log_level")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env(**vars(args))
    except ValueError as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from sellerlift.runtime import BundleError
    from serve.app import create_app, heavy_modules_loaded

    try:
        app = create_app(settings)  # verify + load + warm up here: a bad bundle refuses to start, binding nothing
    except BundleError as err:
        print(f"serve: refusing to start: {err}", file=sys.stderr)
        return 2
    from serve.state import tune_process

    tune_process()
    logging.getLogger("serve").info(
        "heavy modules loaded: %s; binding %s:%d", heavy_modules_loaded() or "none", settings.host, settings.port
    )
    common = dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=True,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.timeout_keep_alive,
        limit_concurrency=settings.limit_concurrency or None,
        h11_max_incomplete_event_size=settings.h11_max_incomplete_event_size,
        http=settings.http,
    )
    if settings.workers > 1:
        # uvicorn starts each worker process from an import string: every worker builds its own app from
        # the environment, so pass the settings (and the bundle this process verified) down that way.
        bundle = str(app.state.serve.runtime.bundle_dir)
        del app
        for name, value in settings.public().items():
            if name in ("api_token_set", "admin_token_set", "workers") or value is None:
                continue
            os.environ[f"SELLERLIFT_{name.upper()}"] = str(value)
        os.environ["SELLERLIFT_BUNDLE"] = bundle
        logging.getLogger("serve").info(
            "starting %d worker processes (a reload applies to the worker that receives it)", settings.workers
        )
        uvicorn.run("serve.app:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        uvicorn.run(app, **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
