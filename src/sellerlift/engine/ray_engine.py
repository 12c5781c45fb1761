"""The Ray engine: units as tasks (retried when a worker or node dies), shards as actors (rebuilt and replayed).

Only this module and :mod:`sellerlift.engine.cluster` / :mod:`sellerlift.engine.scoring` import ray, and only
when ``--engine ray`` is asked for.

* ``map``: one task per unit (``max_retries`` system failures each: a killed worker process, a lost node);
  an exception raised by the unit itself is not retried (it would fail again): it is raised here as it is, with
  a note naming the unit; a unit still failing after its retries fails the job with
  :class:`~sellerlift.engine.base.JobFailed` naming the unit and what happened to its workers.
* ``shards``: one actor per shard, spread over the nodes. Actor state is not checkpointed: when an actor dies
  (its process or its node killed) the group starts a new one from the same source and replays the calls the
  old one had answered, in order. The shard methods are deterministic, so the new actor reaches the same state
  bit for bit and the job's answer is the one an uninterrupted run gives.
"""

from __future__ import annotations

import time

import ray

from sellerlift.engine.base import Engine, JobFailed, _short, progress_bar
from sellerlift.engine.cluster import connect, dashboard_url


class RayEngine(Engine):
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        progress: bool = True,
        retries: int = 3,
        shard_cpus: float | None = None,
        quiet: bool = True,
    ):
        super().__init__(progress)
        t0 = time.perf_counter()
        self.started = connect(address, num_cpus, quiet=quiet)
        self.timings["connect_s"] = time.perf_counter() - t0
        self.retries = retries
        self.shard_cpus = shard_cpus

    @property
    def workers(self) -> int:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    @property
    def nodes(self) -> int:
        return sum(1 for n in ray.nodes() if n.get("Alive"))

    def describe(self) -> dict:
        return {
            "engine": self.name,
            "workers": self.workers,
            "nodes": self.nodes,
            "address": ray.get_runtime_context().gcs_address,
            "local_instance": self.started,
            "dashboard": dashboard_url(),
        }

    def map(self, fn, items, *, desc="tasks", retries=None, num_cpus: float = 1):
        items = list(items)
        retries = self.retries if retries is None else retries
        remote = ray.remote(num_cpus=num_cpus, max_retries=retries, retry_exceptions=False)(_apply)
        t0 = time.perf_counter()
        fn_ref = ray.put(fn)  # a partial / closure is shipped once, not once per unit
        refs = [remote.remote(fn_ref, x) for x in items]
        where = {r: i for i, r in enumerate(refs)}
        out = [None] * len(items)
        bar, desc_, total = progress_bar(self.progress, desc, len(items))
        pending = list(refs)
        with bar:
            task = bar.add_task(desc_, total=total)
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=None)
                for r in done:
                    i = where[r]
                    try:
                        out[i] = ray.get(r)
                    except ray.exceptions.RayTaskError as err:  # the unit's own exception: raise it as it is
                        _cancel(pending)
                        cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
                        cause.add_note(f"in {desc}: unit {i} ({_short(items[i])}), on Ray")
                        raise cause from None
                    except Exception as err:  # its worker or node died, every retry
                        _cancel(pending)
                        raise JobFailed(
                            f"{desc}: unit {i} ({_short(items[i])}) failed after {retries} retries: {_cause(err)}"
                        ) from None
                    bar.advance(task)
        self.timings[f"{desc}_s"] = time.perf_counter() - t0
        return out

    def shards(self, cls, sources, *, desc="shards", num_cpus: float | None = None):
        cpus = num_cpus if num_cpus is not None else self.shard_cpus
        if cpus is None:  # room for a rebuilt shard next to the others on the nodes that are left
            cpus = min(1.0, 0.5 * self.workers / max(1, len(sources)))
        return RayShards(cls, sources, cpus, max_rebuilds=self.retries, desc=desc)

    def close(self) -> None:
        if self.started and ray.is_initialized():
            ray.shutdown()


def _apply(fn, item):
    return fn(item)


def _cancel(refs) -> None:
    for p in refs:
        ray.cancel(p, force=True)


def _cause(err) -> str:
    """What happened to the unit's worker (first line of Ray's message)."""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


class RayShards:
    """Actors holding one shard each; ``call`` / ``call_each`` as :class:`~sellerlift.engine.base.LocalShards`."""

    def __init__(self, cls, sources, num_cpus: float, max_rebuilds: int = 3, desc: str = "shards"):
        self.actor_cls = ray.remote(
            num_cpus=num_cpus, max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD"
        )(cls)
        self.sources = list(sources)
        self.desc = desc
        self.actors = [self.actor_cls.remote(s) for s in self.sources]
        self.log: list[list[tuple[str, tuple]]] = [[] for _ in self.sources]
        self.rebuilds = 0
        self.max_rebuilds = max_rebuilds * max(1, len(self.sources))

    def __len__(self):
        return len(self.actors)

    def call(self, method, *args):
        return self._run([(i, method, args) for i in range(len(self.actors))])

    def call_each(self, method, per_shard):
        return self._run([(i, method, tuple(a)) for i, a in enumerate(per_shard)])

    def _run(self, calls):
        refs = [getattr(self.actors[i], m).remote(*a) for i, m, a in calls]
        out = []
        for (i, m, a), ref in zip(calls, refs):
            while True:
                try:
                    out.append(ray.get(ref))
                    break
                except ray.exceptions.RayActorError as err:
                    ref = getattr(self._rebuild(i, err), m).remote(*a)
                except ray.exceptions.RayTaskError as err:  # the shard's own exception (bad input): as it is
                    cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
                    raise cause from None
        for i, m, a in calls:
            self.log[i].append((m, a))
        return out

    def _rebuild(self, i, err):
        """A new actor for shard ``i``, brought to the state of the dead one by replaying its answered calls."""
        while True:
            self.rebuilds += 1
            if self.rebuilds > self.max_rebuilds:
                raise JobFailed(
                    f"{self.desc}: shard {i} lost {self.rebuilds - 1} times; giving up "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                )
            actor = self.actor_cls.remote(self.sources[i])
            try:
                for m, a in self.log[i]:
                    ray.get(getattr(actor, m).remote(*a))
            except ray.exceptions.RayActorError as again:
                err = again
                continue
            self.actors[i] = actor
            return actor

    def close(self):
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
