"""Algorithms: one readable file each. Only ``repthesis.registry`` imports this package."""
