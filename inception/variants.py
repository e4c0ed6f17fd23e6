"""The GoogLeNet variants by name: the one table that :func:`inception.googlenet.googlenet` and the command line
build from.

Each :class:`Variant` has a builder ``build(input_shape, num_classes, aux) → Model`` and a one-line description.
The builders live with their stems: ``'paper'`` and ``'blog'`` in :mod:`inception.paper`, ``'small'`` in
:mod:`inception.small`; all three stack their Inception blocks with :func:`inception.blocks.stack_blocks`.
Adding a variant is one entry here.

Imports go one way: ``blocks`` ← ``paper``, ``small`` ← ``variants`` ← ``googlenet``.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

from .paper import googlenet_blog, googlenet_paper
from .small import googlenet_small


@dataclass(frozen=True)
class Variant:
    """One GoogLeNet variant: ``build(input_shape=..., num_classes=..., aux=...)`` returns its Model."""

    name: str
    build: Callable
    description: str


#: name → :class:`Variant`, in the order the command line lists them.
VARIANTS = {v.name: v for v in (
    Variant("paper", googlenet_paper,
            "Table 1 / Fig. 3 of Szegedy et al. 2014: LRN stem, global average pooling, aux heads with Flatten"),
    Variant("blog", googlenet_blog,
            "the blog post's Keras code as written: BatchNorm stem, AvgPool2D(7) + Flatten, 4×4 aux outputs, "
            "5a/5b #5×5 = 32/48"),
    Variant("small", googlenet_small,
            "for 32×32 images: 3×3/1 stem with BatchNorm, Table 1's blocks at ¼ width, aux heads scaled to 4×4"),
)}


def get_variant(name):
    """The :class:`Variant` called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not a key of :data:`VARIANTS`; the message lists the names.
    """
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise ValueError(f"unknown GoogLeNet variant {name!r}; the variants are: {', '.join(VARIANTS)}") from None


__all__ = ["Variant", "VARIANTS", "get_variant"]
