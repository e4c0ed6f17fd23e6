"""GoogLeNet (Inception v1) by variant name: ``googlenet(input_shape, num_classes, aux, variant)``.

The variants and their builders are listed in :data:`inception.variants.VARIANTS`:

=========  =====================================================================  ========================
variant    network                                                                built by
=========  =====================================================================  ========================
``paper``  Table 1 / Figure 3 of Szegedy et al. 2014                              :mod:`inception.paper`
``blog``   the blog post's Keras code as written (see ``docs/googlenet.md``)      :mod:`inception.paper`
``small``  a reduced stem for 32×32 images, Table 1's blocks at ¼ width           :mod:`inception.small`
=========  =====================================================================  ========================

Every variant stacks Inception 3a … 5b with :func:`inception.blocks.stack_blocks`, which also attaches the aux
heads after 4a and 4d. :data:`PAPER_BLOCKS` and :data:`BLOG_BLOCKS` are defined in :mod:`inception.blocks` and
re-exported here.
"""
from __future__ import annotations

from .blocks import BLOG_BLOCKS, PAPER_BLOCKS
from .variants import VARIANTS, get_variant


def googlenet(input_shape=(224, 224, 3), num_classes=1000, aux=True, variant="paper"):
    """Build GoogLeNet on tinynet.

    Parameters
    ----------
    input_shape : (H, W, C)
    num_classes : int
    aux : bool
        Add the two auxiliary classifiers (training only in the paper).
    variant : str
        A name in :data:`inception.variants.VARIANTS`: 'paper' (Table 1 / Figure 3: LRN, global average
        pooling), 'blog' (the blog post's Keras code with its defects) or 'small' (:mod:`inception.small`).

    Returns
    -------
    Model
        Outputs ``[aux1, aux2, main]`` (aux1 after 4a, aux2 after 4d) or only ``main`` when ``aux=False``
        (the small variant keeps a list: ``[main]``).
        Parameters at 1000 classes: paper 6,998,552 without aux heads; blog 9,121,976 with them (Keras' count).

    Raises
    ------
    ValueError
        For an unknown ``variant`` (the message lists the names), and, naming the variant's builder, for a
        ``num_classes`` that is not an integer >= 2 or an ``input_shape`` that is not three integers >= 1; an
        input too small for the variant (aux heads: 65×65; ``'blog'``: 193×193) raises
        :class:`~tinynet.layers.ShapeError`, a ``ValueError``. All before any layer is built.
    TypeError
        For an ``aux`` that is not a bool.
    """
    return get_variant(variant).build(input_shape=input_shape, num_classes=num_classes, aux=aux)


__all__ = ["googlenet", "PAPER_BLOCKS", "BLOG_BLOCKS", "VARIANTS"]
