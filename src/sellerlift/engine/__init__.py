"""Where the scale-out jobs run: in this process (``local``, the default) or on a Ray cluster (``ray``).

``get_engine(name)``: ``--engine`` / ``SELLERLIFT_ENGINE``; ``ray`` connects to ``RAY_ADDRESS`` when it is set,
else starts a local Ray instance for the job. Ray is imported here and nowhere else in the package, and only
when the Ray engine is asked for.

``base``       the :class:`Engine` interface, :class:`LocalEngine`, all-or-nothing outputs (``staged_output``)
``ray_engine`` :class:`RayEngine`: tasks with retries, shard actors rebuilt and replayed when they die
``cluster``    connecting; :class:`LocalCluster` (several Ray nodes on one machine)
``jobs``       simulation per chunk, closed-loop evaluation per seed, the sharded allocation
``scoring``    batch scoring: partition by customer, then Ray Data over the partitions (stateful actors)
"""

from sellerlift.engine.base import (
    ENGINES,
    Engine,
    JobFailed,
    LocalEngine,
    engine_name,
    partial_outputs,
    staged_output,
)


def get_engine(
    name: str | None = None, *, address: str | None = None, num_cpus: int | None = None, progress: bool = True, **kw
) -> Engine:
    """The engine named ``name`` (``--engine``; default ``SELLERLIFT_ENGINE`` or ``local``).

    ``ray``: the cluster at ``address`` / ``RAY_ADDRESS`` if set, else a local one started now with ``num_cpus``
    CPUs (all of this machine's by default) and stopped by :meth:`Engine.close`.
    """
    if engine_name(name) == "local":
        return LocalEngine(progress)
    from sellerlift.engine.ray_engine import RayEngine  # the only place ray is imported from

    return RayEngine(address=address, num_cpus=num_cpus, progress=progress, **kw)


__all__ = [
    "ENGINES",
    "Engine",
    "JobFailed",
    "LocalEngine",
    "engine_name",
    "get_engine",
    "partial_outputs",
    "staged_output",
]
