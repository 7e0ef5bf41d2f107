"""Synthetic data: datasheet limits, current profiles, simulation backends, HDF5 store, loader."""
