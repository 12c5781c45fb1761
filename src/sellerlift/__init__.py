"""sellerlift: intent, churn and promotion response for small and medium sellers."""

__version__ = "0.1.0"
