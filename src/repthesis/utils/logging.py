"""Metrics of a run: CSV (the source of truth), TensorBoard events and a curve PNG; the machine
line of benchmark reports."""

from __future__ import annotations

import csv
import math
import os
import platform


def machine_description(device=None) -> str:
    """'<device kind> (<platform>, unless the same), <n> CPU cores, <arch>; jax <version>': the line
    every benchmark report states its figures against (``device``: the first JAX device unless given)."""
    import jax

    device = device or jax.devices()[0]
    kind = device.device_kind if device.device_kind == device.platform else f"{device.device_kind} ({device.platform})"
    return (f"{kind}, {os.cpu_count()} CPU cores, "
            f"{platform.processor() or platform.machine()}; jax {jax.__version__}")


class MetricsLog:
    """Append-only CSV whose rows are keyed by ``step_key`` (``env_steps`` for RL, ``step`` for
    optimiser steps); TensorBoard mirrors each row."""

    def __init__(self, out_dir: str, tensorboard: bool = True, step_key: str = "env_steps"):
        self.step_key = step_key
        self.path = os.path.join(out_dir, "metrics.csv")
        self.out_dir = out_dir
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(out_dir, "tb"))

    def rows(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, steps: int) -> None:
        """On resume, drop rows past the restored checkpoint; they are recomputed identically."""
        rows = [r for r in self.rows() if int(float(r[self.step_key])) <= steps]
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.path + ".tmp"
        fields = list(rows[0]) if rows else []
        with open(tmp, "w", newline="") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
        os.replace(tmp, self.path)  # atomic: a crash never leaves a half-written metrics file

    def append(self, row: dict) -> None:
        rows = self.rows()
        fields = list(rows[0]) if rows else list(row)
        for k in row:
            if k not in fields:
                fields.append(k)
        rows.append({k: row.get(k, "") for k in fields})
        self._rewrite([{k: r.get(k, "") for k in fields} for r in rows])
        if self._tb is not None:
            step = int(row[self.step_key])
            for k, v in row.items():
                if k != self.step_key and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


LABELS = {"episode_return": "training episodes", "val_return": "validation (MAP)",
          "elbo": "training ELBO", "iwae": "training IWAE bound", "val_elbo": "validation ELBO",
          "mse": "training reconstruction MSE", "val_mse": "validation reconstruction MSE"}


def plot_curve(rows: list[dict], path: str, title: str, keys=("episode_return", "val_return"),
               baseline: float | None = None, x_key: str = "env_steps", xlabel: str = "environment steps",
               ylabel: str = "episode return") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        pts = [(float(r[x_key]), float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
        pts = [(x, y) for x, y in pts if math.isfinite(y)]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if key.startswith("val_") else None, ms=3, label=LABELS.get(key, key))
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", label="uniform random policy")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def save_grid(images, path: str, columns: int = 8) -> str:
    """[N, H, W, C] images in [0, 1] as one PNG grid (1-pixel gaps), written atomically."""
    import numpy as np
    from PIL import Image

    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c), np.float32)
    for i, im in enumerate(images):
        r, col = divmod(i, columns)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w] = im
    scale = max(1, 256 // max(grid.shape[:2]))
    grid = np.kron(grid, np.ones((scale, scale, 1)))
    pil = Image.fromarray(((grid[..., 0] if c == 1 else grid) * 255).astype(np.uint8))
    tmp = path + ".tmp.png"
    pil.save(tmp)
    os.replace(tmp, path)
    return path


def progress_bar(total: int, initial: int, unit: str, quiet: bool):
    """A tqdm bar over a run's steps, shown only on a terminal and unless ``quiet``."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)


def timed_chunk(run_chunk, state):
    """(new state, metrics as floats, seconds) of one training chunk."""
    import time

    import jax

    t0 = time.time()
    new_state, metrics = run_chunk(state)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    return new_state, metrics, time.time() - t0
