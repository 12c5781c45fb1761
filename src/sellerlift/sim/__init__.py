"""The built-in simulator: a world of sellers' customers with exact (or Monte Carlo) truth, and its day step.

``config``      parameters of the world and of a run       ``population``  who the customers are
``world``       the state and its daily step (CRN, enduring effects)
``truth``       label probabilities, 7-day curves, the 90-day effect of each level
``tables``      a world's records -> contract tables          ``history``  the cached data set
"""

from sellerlift.sim.config import ARCHETYPES, RESPONSE_COLUMNS, SIM_VERSION, SimulatorConfig
from sellerlift.sim.history import SimulatedData, load_simulated, policy_probs, simulate, simulate_cached
from sellerlift.sim.truth import prob_no_purchase

__all__ = [
    "ARCHETYPES",
    "RESPONSE_COLUMNS",
    "SIM_VERSION",
    "SimulatedData",
    "SimulatorConfig",
    "load_simulated",
    "policy_probs",
    "prob_no_purchase",
    "simulate",
    "simulate_cached",
]
