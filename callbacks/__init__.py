"""Interpretability callbacks: thin Lightning wrappers over `earlens` functions, DDP-correct."""

from earlens.callbacks.filter_stats import FilterStatsCallback
from earlens.callbacks.helicality import HelicalityCallback
from earlens.callbacks.partials import PartialsCallback
from earlens.callbacks.zipf import ZipfCallback

__all__ = ["FilterStatsCallback", "HelicalityCallback", "PartialsCallback", "ZipfCallback"]
