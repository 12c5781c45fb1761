"""``python -m serve [--bundle DIR] [--host H] [--port P] ...``: verify + load a bundle, then serve it.

Exit status 2 (and a one-line reason) when no bundle can be served, e.g. a
sha256 mismatch: nothing is bound in that case.
"""

from __future__ import annotations

import argparse
import logging
import sys

from serve.config import ADMIN_TOKEN_ENV, API_TOKEN_ENV, Settings


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"Every flag also reads SELLERLIFT_<FLAG> from the environment. Tokens come "
                                       f"only from the environment: {API_TOKEN_ENV} (all endpoints), "
                                       f"{ADMIN_TOKEN_ENV} (reload).")
    p.add_argument("--bundle", help="bundle directory (default: registry alias, else the newest under bundles/)")
    p.add_argument("--bundles-dir", dest="bundles_dir")
    p.add_argument("--registry-db", dest="registry_db", help="MLflow sqlite store (default: mlruns/mlflow.db)")
    p.add_argument("--model-alias", dest="model_alias", help="registry alias to serve (default: champion)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, help="uvicorn processes (default 1)")
    p.add_argument("--inference-threads", dest="inference_threads", type=int)
    p.add_argument("--ort-threads", dest="ort_intra_op_threads", type=int)
    p.add_argument("--max-customers", dest="max_customers", type=int)
    p.add_argument("--max-events-per-customer", dest="max_events_per_customer", type=int)
    p.add_argument("--max-body-bytes", dest="max_body_bytes", type=int)
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

    from serve.app import create_app, heavy_modules_loaded
    from serve.bundle import BundleError

    try:
        app = create_app(settings)
    except BundleError as err:
        print(f"serve: refusing to start: {err}", file=sys.stderr)
        return 2
    logging.getLogger("serve").info("heavy modules loaded: %s; binding %s:%d", heavy_modules_loaded() or "none",
                                    settings.host, settings.port)
    if settings.workers > 1:
        logging.getLogger("serve").warning("workers=%d: uvicorn needs an import string for several workers; "
                                           "serving with 1 (run several instances behind a balancer instead)",
                                           settings.workers)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=True, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
