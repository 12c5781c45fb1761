"""The engine interface, the in-process engine, and outputs that appear complete or not at all.

An :class:`Engine` runs the scale-out jobs' two kinds of work:

* ``map(fn, items)``: independent, idempotent units (a simulator chunk, a closed-loop seed, a scoring partition),
  results in the order of ``items``; on Ray each is a task, retried when its worker or node dies. An exception
  raised by a unit itself (bad data, a bug) is raised as it is, with a note naming the unit, on either engine
  (it would fail again on a retry); a unit whose worker keeps dying fails the job with :class:`JobFailed`;
* ``shards(cls, sources)``: stateful holders (the allocation's shards) driven by ``call(method, *args)`` /
  ``call_each(method, per_shard_args)``; on Ray each is an actor, rebuilt from its source and replayed when it dies.

:class:`LocalEngine` runs both in this process, so ``--engine local`` (the default) and ``--engine ray`` are
the same code path. :func:`staged_output` gives a job a hidden directory next to its final one, renamed onto it
only when the job finished: a failed or killed job leaves nothing under the final name.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

ENGINES = ("local", "ray")
ENV_ENGINE = "SELLERLIFT_ENGINE"


class JobFailed(RuntimeError):
    """A job that could not finish (after retries); its final output was not written."""


def engine_name(name: str | None = None) -> str:
    """``name``, else ``SELLERLIFT_ENGINE``, else ``local``; checked."""
    name = (name or os.environ.get(ENV_ENGINE) or "local").strip().lower()
    if name not in ENGINES:
        raise ValueError(f"engine {name!r}: expected one of {list(ENGINES)} (--engine / {ENV_ENGINE})")
    return name


class Engine:
    """Where a job's units run; see the module doc."""

    name = "?"

    def __init__(self, progress: bool = True):
        self.progress = progress
        self.timings: dict[str, float] = {}

    @property
    def workers(self) -> int:
        return 1

    def map(self, fn: Callable, items: Sequence, *, desc: str = "tasks", retries: int = 3) -> list:
        raise NotImplementedError

    def shards(self, cls, sources: Sequence, *, desc: str = "shards"):
        raise NotImplementedError

    def describe(self) -> dict:
        return {"engine": self.name, "workers": self.workers}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(enabled: bool, desc: str, total: int):
    """A rich progress bar on the driver (stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
    return bar, desc, total


class LocalEngine(Engine):
    """Everything in this process, one unit after the other (the default)."""

    name = "local"

    def map(self, fn, items, *, desc="tasks", retries=3):
        items = list(items)
        bar, desc, total = progress_bar(self.progress, desc, len(items))
        out = []
        t0 = time.perf_counter()
        with bar:
            task = bar.add_task(desc, total=total)
            for i, item in enumerate(items):
                try:
                    out.append(fn(item))
                except Exception as err:
                    err.add_note(f"in {desc}: unit {i} ({_short(item)})")
                    raise
                bar.advance(task)
        self.timings[f"{desc}_s"] = time.perf_counter() - t0
        return out

    def shards(self, cls, sources, *, desc="shards"):
        return LocalShards([cls(s) for s in sources])


class LocalShards:
    """Shard objects in this process, with the ``call`` / ``call_each`` of the sharded algorithms."""

    def __init__(self, objs):
        self.objs = objs

    def __len__(self):
        return len(self.objs)

    def call(self, method, *args):
        return [getattr(o, method)(*args) for o in self.objs]

    def call_each(self, method, per_shard):
        return [getattr(o, method)(*a) for o, a in zip(self.objs, per_shard)]

    def close(self):
        self.objs = []


def _short(item) -> str:
    s = repr(item)
    return s if len(s) < 80 else s[:77] + "..."


# --------------------------------------------------------------------------- all-or-nothing outputs


@contextmanager
def staged_output(final: str | Path, keep_failed: bool = False):
    """A hidden directory ``.<name>.partial-<id>`` beside ``final``, renamed onto ``final`` when the block ends
    without an error (an older ``final`` is replaced, not merged); on an error it is removed, ``final`` untouched.

    The staging directory is on the same file system as ``final``, so the rename is atomic; on a cluster it
    must be storage every worker can write (a shared file system).
    """
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:12]}"
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        if not keep_failed:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        final.rename(old)
    stage.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def partial_outputs(final: str | Path) -> list[Path]:
    """Leftover staging directories of ``final`` (a killed driver leaves one; safe to delete)."""
    final = Path(final).absolute()
    return sorted(final.parent.glob(f".{final.name}.partial-*"))


def chunks_of(items: Iterable, n: int) -> list[list]:
    """``items`` in ``n`` contiguous groups of near-equal size (order kept)."""
    items = list(items)
    n = max(1, min(n, len(items)))
    q, r = divmod(len(items), n)
    out, a = [], 0
    for i in range(n):
        b = a + q + (i < r)
        out.append(items[a:b])
        a = b
    return [g for g in out if g]
