"""Stages of a training run. Each is a function ``stage(ctx: RunContext) -> None``.

``cfg.model.stage`` names the stage that trains the run's model; ``cfg.extras``
lists stages that add to the same run and bundle afterwards (e.g. segments).
"""
