"""schulki: private AI for school networks."""

__version__ = "0.1.0"
