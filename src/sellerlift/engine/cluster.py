"""Connecting to Ray, and a Ray cluster of several nodes on this machine (tests, benchmarks, trying it out).

:func:`connect`: the cluster named by ``address`` / ``RAY_ADDRESS``, else a new local instance
(``ray.init(address="local")``: never an unrelated cluster that happens to run on the machine).

:class:`LocalCluster`: ``ray start --head`` plus ``ray start --address ...`` per extra node, each with its own
temp dir, CPU count and ports, token authentication with a token of its own. It is stopped by killing the
processes it started, found by their temp dirs (``ray stop`` would stop every Ray on the machine)::

    python -m sellerlift.engine cluster up --nodes 2 --cpus 1      # prints the RAY_ADDRESS ... to export
    python -m sellerlift.engine cluster down
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DIR = Path(tempfile.gettempdir()) / "sellerlift-ray"
_DASHBOARD: str | None = None  # of the cluster connect() joined


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Connect this process to Ray; returns True when it started a local instance (to be shut down after)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kw = {"logging_level": "WARNING", "log_to_driver": not quiet, "configure_logging": True}
    global _DASHBOARD
    if address:
        _token_auth_from_env()
        ctx = ray.init(address=address, **kw)
        _DASHBOARD = getattr(ctx, "dashboard_url", None) or None
        return False
    ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=_dashboard_installed(), **kw)
    _DASHBOARD = getattr(ctx, "dashboard_url", None) or None
    return True


def _token_auth_from_env() -> None:
    """Ray reads ``RAY_AUTH_MODE`` when it is imported; a cluster named later (``RAY_AUTH_MODE=token`` with
    ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` set after the import) needs its config refreshed."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
        from ray._raylet import AuthenticationTokenLoader

        _enable_token_auth()
        AuthenticationTokenLoader.instance().reset_cache()
    except ImportError:  # another Ray version: the environment is read at import only
        pass


def _dashboard_installed() -> bool:
    """The dashboard needs ``ray[default]`` (aiohttp & co.); without it ray.init must not try to start one."""
    try:
        import aiohttp  # noqa: F401
        import ray.dashboard
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError:
        return False
    return True


def dashboard_url() -> str | None:
    """http://host:port of the Ray dashboard of the cluster this process connected to, if it runs one."""
    url = _DASHBOARD
    return f"http://{url}" if url and not url.startswith("http") else (url or None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


class LocalCluster:
    """``nodes`` Ray nodes on this machine with ``cpus`` CPUs each (see the module doc)."""

    def __init__(
        self,
        nodes: int = 2,
        cpus: int = 1,
        root: str | Path | None = None,
        object_store_mb: int = 256,
        env: dict | None = None,
        dashboard: bool = False,
    ):
        self.nodes, self.cpus = nodes, cpus
        self.dashboard = dashboard and _dashboard_installed()
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="sellerlift-ray-"))
        self.object_store = object_store_mb * 1024 * 1024
        self.address: str | None = None
        self.extra_env = dict(env or {})

    # ---- state
    def node_dir(self, i: int) -> Path:
        return self.root / f"node{i}"

    @property
    def token_path(self) -> Path:
        return self.root / "token"

    @property
    def env(self) -> dict:
        """What a process needs to join or drive this cluster."""
        return {
            "RAY_ADDRESS": self.address or "",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),
        }

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(
            {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path), "RAY_USAGE_STATS_ENABLED": "0"},
            **self.extra_env,
        )
        return env

    # ---- start / stop
    def start(self, timeout: float = 120.0) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.token_path.exists():
            self.token_path.write_text(secrets.token_hex(32))
            self.token_path.chmod(0o600)
        port = free_port()
        for i in range(self.nodes):
            d = self.node_dir(i)
            d.mkdir(parents=True, exist_ok=True)
            cmd = [
                _ray_bin(),
                "start",
                f"--num-cpus={self.cpus}",
                f"--temp-dir={d}",
                "--disable-usage-stats",
                f"--object-store-memory={self.object_store}",
                f"--node-manager-port={free_port()}",
                f"--object-manager-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}",
            ]
            if i == 0:
                cmd += ["--head", f"--port={port}", f"--include-dashboard={str(self.dashboard).lower()}"]
                if self.dashboard:
                    cmd += ["--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}"]
            else:
                cmd += [f"--address={self.address}"]
            proc = subprocess.run(cmd, env=self._env(), capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:
                self.stop()
                raise RuntimeError(f"ray start (node {i}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
            if i == 0:
                self.address = self._head_address(proc.stdout + proc.stderr, port)
        (self.root / "cluster.json").write_text(
            json.dumps({"address": self.address, "nodes": self.nodes, "cpus": self.cpus})
        )
        self.wait_nodes(self.nodes, timeout)
        return self.address

    @staticmethod
    def _head_address(out: str, port: int) -> str:
        import re

        m = re.search(r"ray start --address='([^']+)'", out)
        return m.group(1) if m else f"127.0.0.1:{port}"

    def wait_nodes(self, n: int, timeout: float = 120.0) -> None:
        """Until ``n`` nodes are alive (asked in a subprocess: this process may not be connected)."""
        code = (
            "import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))"
        )
        t0 = time.time()
        while True:
            p = subprocess.run(
                [sys.executable, "-c", code, self.address],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            alive = int(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 and p.stdout.strip() else 0
            if alive >= n:
                return
            if time.time() - t0 > timeout:
                raise RuntimeError(f"{alive} of {n} Ray nodes alive after {timeout:.0f} s: {p.stderr[-1000:]}")
            time.sleep(1.0)

    def pids(self, node: int | None = None, name: str | None = None) -> list[int]:
        """Processes of this cluster (of one node; with ``name`` in their command line): those whose command line
        names a node's temp dir, and, for the whole cluster, those whose environment names its token file (the
        agents and workers a raylet starts rename themselves ``ray::...``)."""
        dirs = [str(self.node_dir(i)).encode() for i in (range(self.nodes) if node is None else [node])]
        token = f"RAY_AUTH_TOKEN_PATH={self.token_path}".encode()
        out = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit() or int(p.name) == os.getpid():
                continue
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ")
                ours = any(d in cmd for d in dirs)
                if not ours and node is None:
                    ours = token in (p / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if ours and (name is None or name.encode() in cmd):
                out.append(int(p.name))
        return sorted(out)

    def kill_node(self, node: int, sig: int = signal.SIGKILL) -> list[int]:
        """SIGKILL the raylet of ``node`` (its workers die with it): the node is lost."""
        pids = self.pids(node, "raylet/raylet")
        for pid in pids:
            os.kill(pid, sig)
        return pids

    def stop(self) -> None:
        """Kill every process of the cluster (workers first), then remove its directory."""
        for _ in range(3):
            pids = self.pids()
            workers = [p for p in pids if _cmd(p).startswith("ray::")]
            for pid in workers + [p for p in pids if p not in workers]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            if not self.pids():
                break
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def _cmd(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
