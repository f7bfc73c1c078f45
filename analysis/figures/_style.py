"""Shared figure plumbing: axis labels that state direction and convention, colours.

Figures are built on :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot
state, no display), so they render the same in a notebook, a test or a Ray-free CI job.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

__all__ = ["axis_label", "describe", "figure_png", "maybe_log_x", "new_axes",
           "new_figure", "resolve_column", "tier_colours", "value_label"]

# Leakage column families (``<metric>_<attack>``): label (direction) and convention.
_LEAKAGE = {
    "attack_acc": ("Attack accuracy (lower = more private)",
                   "evaluation classifier on reconstructions"),
    "recognisable": ("Recognisable fraction (lower = more private)",
                     "share of images with SSIM > 0.3"),
    "nn_ident": ("NN identification rate (lower = more private)",
                 "nearest gallery image is the true one"),
    "ssim": ("SSIM (lower = more private)",
             "SSIM: Gaussian 11x11, sigma 1.5, valid region, per image"),
    "psnr": ("PSNR, dB (lower = more private)", "PSNR: peak 1, per image"),
    "mse": ("MSE (higher = more private)", "MSE: per element, per image, [0, 1] scale"),
}
_PLAIN = {
    "accuracy": ("Accuracy (higher = more useful)",
                 "edge + cloud pipeline, device accuracy"),
    "macs": ("MACs per sample (conv/linear, FLOPs/2)", "edge model, deployed layers"),
    "params": ("Edge parameters (deployed)", "training-only heads excluded"),
    "bytes_per_sample": ("Bytes sent per sample (lower = cheaper)",
                         "float32 feature z"),
    "elements_per_sample": ("Elements of z per sample", "transmitted feature size"),
    "latency_ms": ("Simulated latency, ms (lower = faster)",
                   "compute / device speed + bytes / uplink"),
    "compute_ms": ("Simulated compute time, ms", "MACs / device speed"),
    "uplink_ms": ("Simulated uplink time, ms", "bytes / uplink bandwidth"),
    "mi_nats": ("I(x; z), nats (lower = more private)", "neural lower bound, held-out"),
    "mi_paper_nats": ("I(x; z), nats, paper variant (lower = more private)",
                      "sigmoid MINE critic: cannot exceed 1 nat"),
    "dcor2_bc": ("dCor^2(x, z), bias-corrected (lower = more private)",
                 "U-centred, fixed-size subsample"),
    "nonzero_per_sample": ("Non-zero elements of z per sample (lower = more private)",
                           "effective information volume"),
    "nonzero_fraction": ("Non-zero fraction of z (lower = more private)",
                         "effective information volume per element"),
    "eval_acc_real": ("Evaluation classifier accuracy on real images", ""),
    "loss": ("Training loss (lower = better fit)", "mean over participating devices"),
    "train_loss": ("Training loss (lower = better fit)", "per device"),
    "compute_gflops": ("Device compute budget, GFLOP/s", "the device's own hardware"),
    "uplink_mbps": ("Device uplink, Mbit/s", "the device's own hardware"),
    "memory_mb": ("Device memory for the edge model, MB", "the device's own hardware"),
    "availability": ("Device availability", "probability to be reachable in a round"),
    "busy_s": ("Virtual seconds busy training", "summed over the rounds"),
    "rounds_completed": ("Rounds completed (accepted)", "per device"),
    "rounds_straggled": ("Rounds straggled (past the deadline)", "per device"),
    # the attacker's budget (attack_budgets)
    "aux_size": ("Auxiliary images (aux_size)", "the first of the attacker's data"),
    "aux_images": ("Auxiliary images the attack used", "attacker's budget"),
    "oracle_queries": ("Queries to the victim's edge", "images sent through it"),
    "optimisation_steps": ("Optimisation steps of the attack",
                           "updates of every optimiser it ran"),
    "cpu_seconds": ("Attack CPU seconds", "the attack unit's worker"),
}
_STATS = ("_mean", "_lo", "_hi", "_pooled")


def describe(column: str) -> tuple[str, str, str | None]:
    """``(label, convention, metric)`` of a column for its axis label; ``metric`` is
    the leakage metric (``ssim``, ``mse``, ...) or None when the column is not
    leakage. Labels only: attacks are never read back from column names."""
    base = column
    for stat in _STATS:
        if base.endswith(stat) and base[: -len(stat)]:
            base = base[: -len(stat)]
            break
    if base in _PLAIN:
        return (*_PLAIN[base], None)
    for metric, (label, convention) in _LEAKAGE.items():
        if base == metric or base.startswith(f"{metric}_"):
            return label, convention, metric
    return column, "", None


def axis_label(column: str) -> str:
    """Two-line axis label: what and which direction is better, then the convention."""
    label, convention, _ = describe(column)  # the title names the column
    return f"{label}\n{convention}" if convention else label


def resolve_column(frame: pd.DataFrame, name: str, argument: str) -> str:
    """``name`` or ``name_mean`` (device names work on tier tables), else ValueError."""
    for candidate in (name, f"{name}_mean"):
        if candidate in frame.columns:
            return candidate
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    raise ValueError(f"{argument}={name!r} is not a column of the frame (nor "
                     f"{name + '_mean'!r}); numeric columns: {numeric}")


def new_axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.4)
             ) -> tuple[Figure, Axes]:
    """The caller's axes, or a fresh Agg figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(figsize)
    return fig, fig.add_subplot()


def new_figure(figsize: tuple[float, float]) -> Figure:
    """An empty Agg figure with constrained layout."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def tier_colours(tiers: list[str]) -> dict[str, tuple[float, ...]]:
    """A stable colour per tier, in the order given (tab10, then tab20)."""
    from matplotlib import colormaps
    cmap = colormaps["tab10" if len(tiers) <= 10 else "tab20"]
    return {t: cmap(i % cmap.N) for i, t in enumerate(tiers)}


def maybe_log_x(ax: Axes, values: np.ndarray | pd.Series) -> bool:
    """Log x-axis where the positive values span a decade or more."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() >= 10:
        ax.set_xscale("log")
        if v.max() / v.min() >= 100:  # labelled minors would overlap
            ax.xaxis.set_minor_formatter(NullFormatter())
        return True
    return False


LEGEND_ROWS = 24   # legend entries a column holds before the legend takes another


def legend_beside(entries: int, size: tuple[float, float]) -> tuple[tuple[float, float], int]:
    """``(figsize, columns)`` for a plot of ``size`` with a legend of ``entries`` beside
    it: a column per :data:`LEGEND_ROWS` entries and the figure as tall as its rows (a
    fixed size squeezed a 41-point sweep's plot to nothing and cut the legend off)."""
    columns = -(-entries // LEGEND_ROWS)
    rows = -(-entries // columns)
    return (size[0] + 2.6 * (columns - 1), max(size[1], 1.2 + 0.16 * rows)), columns


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (Agg), for embedding."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def value_label(value: object, width: int = 60) -> str:
    """A legend label for a table value; a plug-in spec (a sweep axis stores it as
    JSON, e.g. ``{"name": "siftfunnel", "beta": 0.4}``) reads ``siftfunnel beta=0.4``."""
    text = str(value)
    try:
        spec = json.loads(text)
    except ValueError:
        spec = None
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        rest = " ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
        text = f"{spec['name']} {rest}".strip()
    return text if len(text) <= width else text[: width - 3] + "..."
