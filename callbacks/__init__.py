"""Interpretability callbacks: thin Lightning wrappers over `earlens` functions, DDP-correct."""

from callbacks.filter_stats import FilterStatsCallback
from callbacks.helicality import HelicalityCallback
from callbacks.partials import PartialsCallback
from callbacks.zipf import ZipfCallback

__all__ = ["FilterStatsCallback", "HelicalityCallback", "PartialsCallback", "ZipfCallback"]
