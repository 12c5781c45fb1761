"""Closed-loop evaluation: policies run forward in time, measured by A/B tests, DiD and off-policy estimates."""
