"""Training curves and the gradient-norm plot as image files (matplotlib, written atomically)."""
from __future__ import annotations

from . import fileio


def _figure(**kwargs):
    """A matplotlib Figure without pyplot, so the caller's backend (a notebook's inline one) is left alone."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, path):
    """Lay out ``fig`` and write it to ``path`` atomically; return ``path``."""
    fig.tight_layout()
    fileio.save_figure(fig, path, dpi=100)
    return path


def plot_history(history, path, title="training"):
    """Write the loss curves (total and per head, validation) and accuracies per epoch as a PNG."""
    epochs = history["epoch"]
    fig = _figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, history["loss"], "k-", label="train total")
    for key in sorted(k for k in history if k.startswith("loss_")):
        ax1.plot(epochs, history[key], "--" if "aux" in key else "-", label=f"train {key[5:]}")
    if "val_loss" in history:
        ax1.plot(epochs, history["val_loss"], "r-", label="validation main")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.plot(epochs, history["acc"], "k-", label="train top-1 (main)")
    if "val_acc" in history:
        ax2.plot(epochs, history["val_acc"], "r-", label="validation top-1")
    if "val_top5" in history:
        ax2.plot(epochs, history["val_top5"], "r:", label="validation top-5")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend(loc="lower right")
    fig.suptitle(title)
    return _save(fig, path)


def plot_grad_norms(grad_norms, path, title="gradient norms of the lower layers, with and without aux heads"):
    """Plot each group's gradient norm over training steps: solid with the aux heads, dashed main loss only."""
    import matplotlib

    fig = _figure(figsize=(8, 4.5))
    ax = fig.subplots()
    steps = grad_norms["step"]
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, group in zip(colors, grad_norms["with_aux"]):
        ax.plot(steps, grad_norms["with_aux"][group], "-", color=color, label=f"{group} with aux")
        ax.plot(steps, grad_norms["main_only"][group], "--", color=color, label=f"{group} main only")
    ax.set_xlabel("step")
    ax.set_ylabel("‖∂L/∂w‖ of the block")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


__all__ = ["plot_history", "plot_grad_norms"]
