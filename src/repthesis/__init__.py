"""repthesis: JAX/Flax reimplementation of the thesis's representation-learning methods."""

__version__ = "0.1.0"
