"""Utilities with Keras' names: :func:`to_categorical` and :func:`plot_model`.

``plot_model`` is imported when first used, so ``import tinynet`` does not load matplotlib.
"""
from .categorical import to_categorical


def __getattr__(name):
    if name == "plot_model":
        from .plotting import plot_model

        return plot_model
    raise AttributeError(f"module 'tinynet.utils' has no attribute {name!r}")


__all__ = ["to_categorical", "plot_model"]
