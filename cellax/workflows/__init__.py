"""Workflows: the one layer that imports across data, physics, train, rl and matplotlib (the CLI calls these)."""
