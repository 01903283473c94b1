"""Figures of paper section 5.2 as PNG files (matplotlib, headless).

- `plot_layer_weights`: selector weights `omega` across a speech input with word boundaries (Figure 5);
- `plot_per_layer`: a per-layer curve per model, for intrinsic dimension (Figure 3) and subspace overlap (Figure 4).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator


def plot_layer_weights(
    omega: np.ndarray,
    path: str | os.PathLike,
    boundaries: Sequence[int] = (),
    words: Sequence[str] | None = None,
    peaks: Sequence[int] = (),
    title: str | None = None,
) -> str:
    """Figure 5: `omega` `(positions, layers)` as a heat map (top) and its last layer (bottom), word boundaries as
    vertical bars; `words` (one per boundary, the word it closes) label the bars, `peaks` are marked on the curve."""
    omega = np.asarray(omega, dtype=np.float64)
    positions, layers = omega.shape
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(max(8.0, positions / 12), 5.5),
        sharex=True,
        gridspec_kw={"height_ratios": [2, 1]},
    )
    image = top.imshow(
        omega.T,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        interpolation="nearest",
        extent=(-0.5, positions - 0.5, 0.5, layers + 0.5),
    )
    fig.colorbar(image, ax=[top, bottom], label=r"$\omega$", fraction=0.03, pad=0.01)
    top.set_ylabel("layer")
    # Word labels sit above the heat map: leave them room under the title.
    top.set_title(
        title or r"Selector layer weights $\omega$ across a speech input",
        pad=24 if words else 6,
    )
    bottom.plot(np.arange(positions), omega[:, -1], color="tab:blue", linewidth=1.2)
    if len(peaks):
        bottom.plot(
            peaks,
            omega[np.asarray(peaks), -1],
            "v",
            color="tab:red",
            markersize=5,
            label="peaks",
        )
        bottom.legend(loc="upper right", fontsize=8)
    bottom.set_ylabel(r"$\omega^{(L)}$")
    bottom.set_xlabel("speech unit position")
    for axis in (top, bottom):
        for b in boundaries:
            axis.axvline(
                b - 0.5,
                color="white" if axis is top else "0.35",
                linewidth=0.8,
                linestyle="--",
            )
    if words is not None:
        for b, word in zip(boundaries, words):
            top.text(
                b - 0.5,
                layers + 0.6,
                word,
                rotation=45,
                fontsize=7,
                ha="right",
                va="bottom",
            )
    bottom.set_xlim(-0.5, positions - 0.5)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def plot_per_layer(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    ylabel: str,
    title: str,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> str:
    """Figures 3 and 4: one line per model over backbone layers (1-based), with optional error bands."""
    fig, axis = plt.subplots(figsize=(6.5, 4.0))
    for name, values in curves.items():
        values = np.asarray(values, dtype=np.float64)
        layers = np.arange(1, len(values) + 1)
        (line,) = axis.plot(layers, values, marker="o", markersize=3, label=name)
        if errors and name in errors:
            error = np.asarray(errors[name], dtype=np.float64)
            axis.fill_between(
                layers,
                values - error,
                values + error,
                color=line.get_color(),
                alpha=0.2,
            )
    axis.set_xlabel("layer")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
