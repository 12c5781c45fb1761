"""Runs that survive being killed: SIGTERM -> a FAILED MLflow run; ``resume=auto`` -> the last checkpoint.

``resume`` (configs/train.yaml):

* ``null`` (default): a fresh run; checkpoints go to the run's output folder as before.
* ``auto``: checkpoints go to a stable folder ``<root>/checkpoints/<key>``, where
  ``key`` is derived from what decides the result (model, data, trainer, seed;
  not paths, progress bars or ``max_epochs``). Starting the same command again
  after a crash resumes from ``last.ckpt`` there (weights, optimizer, epoch,
  early-stopping and best-checkpoint state, torch RNG). A finished run renames
  the folder to ``<key>.finished-<run id>``, so the next ``auto`` run starts fresh.
* a path: resume from that checkpoint file (its folder becomes the checkpoint folder).

MLflow: every attempt is its own run. SIGTERM is turned into an exception, so
the attempt's run is marked FAILED with the error. SIGKILL (or OOM, power loss)
cannot be caught: that attempt's run stays RUNNING until the next ``auto``
attempt finds it (``attempt.json`` in the checkpoint folder) and marks it KILLED
with an ``error`` tag; the new run carries ``resume.previous_run_id`` and
``resume.checkpoint`` tags.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
ATTEMPT = "attempt.json"
# Keys that do not change what a run computes (or that legitimately change between attempts).
VOLATILE = (
    "data.source.progress",
    "data.source.cache_root",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.default_root_dir",
    "trainer.log_every_n_steps",
    "trainer.max_epochs",
)


class Terminated(Exception):
    """The process received SIGTERM; raised from the signal handler so the run is marked FAILED."""


@contextlib.contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises :class:`Terminated` (Python's default would exit without cleanup)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(
            f"received {signal.Signals(signum).name} (pid {os.getpid()}): the run was stopped; "
            "start it again with resume=auto to continue from its last checkpoint"
        )

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_key(cfg: DictConfig) -> str:
    """``<model>-<data>-<sha12>``: the same for two launches of the same run, different otherwise."""
    c = cfg.copy()
    with open_dict(c):
        for key in VOLATILE:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(c, parent)
            if node is not None and leaf in node:
                node[leaf] = None
    parts = {
        k: OmegaConf.to_container(c[k], resolve=True) if isinstance(c.get(k), DictConfig) else c.get(k)
        for k in ("model", "data", "trainer", "seed")
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{cfg.model.name}-{cfg.data.name}-{digest}"


@dataclass
class ResumePlan:
    ckpt_dir: Path | None = None  # stable checkpoint folder (None: resume is off)
    ckpt_path: str | None = None  # checkpoint to resume from (None: start fresh)
    previous: dict | None = None  # attempt.json of the previous attempt, if any

    @property
    def enabled(self) -> bool:
        return self.ckpt_dir is not None


def plan(cfg: DictConfig, root: str | Path) -> ResumePlan:
    resume = cfg.get("resume")
    if not resume:
        return ResumePlan()
    if resume == "auto":
        folder = Path(root) / CHECKPOINTS / run_key(cfg)
        ckpt = _newest_loadable(folder)
    else:
        ckpt = Path(resume)
        folder = ckpt.parent
    previous = None
    if (folder / ATTEMPT).is_file():
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads((folder / ATTEMPT).read_text())
    return ResumePlan(folder, str(ckpt) if ckpt else None, previous)


def _newest_loadable(folder: Path) -> Path | None:
    """``last.ckpt`` if it loads, else the newest other checkpoint that does (a torn file is skipped)."""
    import torch

    if not folder.is_dir():
        return None
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.name != "last.ckpt", -p.stat().st_mtime))
    for path in candidates:
        try:
            torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            return path
        except Exception as err:
            log.warning("checkpoint %s cannot be loaded (%s: %s); trying an older one", path, type(err).__name__, err)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def begin_attempt(p: ResumePlan, client, run_id: str | None) -> None:
    """Claim the checkpoint folder, close a stale RUNNING run of a killed attempt, tag this run."""
    if not p.enabled:
        return
    p.ckpt_dir.mkdir(parents=True, exist_ok=True)
    prev = p.previous or {}
    if (
        prev.get("host") == socket.gethostname()
        and prev.get("pid") not in (None, os.getpid())
        and _alive(int(prev["pid"]))
        and prev.get("state") == "running"
    ):
        raise RuntimeError(
            f"{p.ckpt_dir}: another run (pid {prev['pid']}) is training into this checkpoint folder; "
            "wait for it or stop it first"
        )
    prev_run = prev.get("run_id")
    if client is not None and prev_run and prev_run != run_id:
        try:
            status = client.get_run(prev_run).info.status
        except Exception:
            status = None
        if status == "RUNNING":
            client.set_tag(
                prev_run,
                "error",
                f"the process (pid {prev.get('pid')}) stopped without cleanup (SIGKILL, "
                f"out of memory or power loss); resumed by run {run_id}",
            )
            client.set_terminated(prev_run, status="KILLED")
            log.warning("MLflow run %s of the killed attempt was left RUNNING; marked KILLED", prev_run)
    if client is not None and run_id:
        if p.ckpt_path:
            client.set_tag(run_id, "resume.checkpoint", p.ckpt_path)
        if prev_run:
            client.set_tag(run_id, "resume.previous_run_id", prev_run)
        client.set_tag(run_id, "resume.key", p.ckpt_dir.name)
    _write_attempt(
        p,
        {
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "state": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "resumed_from": p.ckpt_path,
        },
    )


def _write_attempt(p: ResumePlan, record: dict) -> None:
    tmp = p.ckpt_dir / f".{ATTEMPT}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, p.ckpt_dir / ATTEMPT)


def use_checkpoint_dir(callbacks: list, p: ResumePlan) -> list:
    """Point the ModelCheckpoint at the stable folder (adding one that saves ``last.ckpt`` if there is none)."""
    if not p.enabled:
        return callbacks
    from lightning.pytorch.callbacks import ModelCheckpoint

    folder = os.path.realpath(p.ckpt_dir)
    found = [cb for cb in callbacks if isinstance(cb, ModelCheckpoint)]
    for cb in found:
        cb.dirpath = folder
        cb.save_last = cb.save_last or True
    if not found:
        callbacks = [*callbacks, ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0)]
    return callbacks


def finish(p: ResumePlan, run_id: str | None) -> Path | None:
    """The run finished: move its checkpoints aside so the next ``resume=auto`` starts a new run."""
    if not p.enabled or not p.ckpt_dir.is_dir():
        return None
    done = p.ckpt_dir.with_name(f"{p.ckpt_dir.name}.finished-{run_id or time.strftime('%Y%m%d-%H%M%S')}")
    if (p.ckpt_dir / ATTEMPT).exists():
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((p.ckpt_dir / ATTEMPT).read_text())
            _write_attempt(p, {**record, "state": "finished"})
    os.replace(p.ckpt_dir, done)
    return done
