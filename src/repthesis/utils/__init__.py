"""Run plumbing shared by every entry point: checkpoints, metric logs, plots."""
