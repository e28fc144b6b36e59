"""Objectives and estimators of the generative chapters (pure functions, STYLE.md §3)."""
