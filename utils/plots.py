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
    ax1.legend(loc="best" if label == "loss" else "lower right")  # best: the first free corner, upper right first
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


def record_output_shapes(model, batch, names) -> dict:
    """Run `model(batch)` once and return {name: output shape} of its submodules `names`, via forward hooks."""
    import torch

    shapes = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda module, inputs, output, name=name: shapes.__setitem__(name, tuple(output.shape))) for name in names]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def plot_model_diagram(steps, title):
    """Chapter 4's figure: one box per step (text, output shape, colour), top to bottom, arrows between them."""
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    previous_bottom = None
    for i, (text, shape, colour) in enumerate(steps):
        y = len(steps) - 1 - i
        height = 0.75 if "\n" in text else 0.5
        ax.add_patch(plt.Rectangle((0, y - height / 2), 6, height, facecolor=colour, alpha=0.35, edgecolor="k"))
        ax.text(3, y, text, ha="center", va="center", fontsize=9)
        ax.text(6.3, y, shape, ha="left", va="center", fontsize=9, family="monospace")
        if previous_bottom is not None:  # an arrow from the box above
            ax.annotate("", xy=(3, y + height / 2), xytext=(3, previous_bottom), arrowprops={"arrowstyle": "->"})
        previous_bottom = y - height / 2
    ax.text(6.3, len(steps) - 0.45, "output shape (batch, tokens, ...)", fontsize=9, style="italic")
    ax.set_xlim(-0.1, 10.5)
    ax.set_ylim(-0.6, len(steps) - 0.2)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
