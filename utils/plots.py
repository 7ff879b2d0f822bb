"""Chapters 5-7: loss and accuracy curves (matplotlib), as the book draws them.

Both functions return the figure without showing it: in a notebook write `fig = plot_losses(...)`
then `plt.show()` (a bare `plot_losses(...)` as a cell's last line would display it twice).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def _twin_plot(epochs_seen, seen, train_values, val_values, label, seen_label):
    if len(train_values) == 0:
        raise ValueError("there is nothing to plot (no evaluation was recorded): train with a smaller eval_freq")
    if not (len(epochs_seen) == len(seen) == len(train_values) == len(val_values)):
        raise ValueError(
            f"the four sequences must have one entry per evaluation: got {len(epochs_seen)} epochs, "
            f"{len(seen)} {seen_label.lower()}, {len(train_values)} train and {len(val_values)} validation values"
        )
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, train_values, label=f"Training {label}")
    ax1.plot(epochs_seen, val_values, linestyle="-.", label=f"Validation {label}")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(label.capitalize())
    ax1.legend(loc="upper right" if label == "loss" else "lower right")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
    ax2 = ax1.twiny()  # a second x-axis on top, sharing the y-axis
    ax2.plot(seen, train_values, alpha=0)  # invisible: only aligns the ticks
    ax2.set_xlabel(seen_label)
    fig.tight_layout()
    return fig


def plot_losses(epochs_seen, tokens_seen, train_losses, val_losses):
    """The book's chapter-5 figure: train/val loss against epochs, tokens seen on a second (top) x-axis."""
    return _twin_plot(epochs_seen, tokens_seen, train_losses, val_losses, "loss", "Tokens seen")


def plot_values(epochs_seen, examples_seen, train_values, val_values, label="loss"):
    """The book's chapter-6 figure: train/val `label` ("loss" or "accuracy") against epochs, examples seen on top."""
    return _twin_plot(epochs_seen, examples_seen, train_values, val_values, label, "Examples seen")
