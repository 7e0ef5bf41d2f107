"""cellax: a JAX library for data-driven battery modelling."""

__version__ = "0.1.0"
