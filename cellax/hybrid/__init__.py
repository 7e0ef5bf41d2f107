"""Hybrid physics–neural cell model: the SPMe with learned corrections, trained through its solver on DFN data."""

from cellax.hybrid.model import HybridSPMe, features

__all__ = ["HybridSPMe", "features"]
