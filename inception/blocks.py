"""What every GoogLeNet variant shares: the Inception module (Figure 2 of Szegedy et al. 2014), the auxiliary
classifier, the block widths (:data:`PAPER_BLOCKS`, :data:`BLOG_BLOCKS`, :data:`SMALL_BLOCKS`) and
:func:`stack_blocks`, which runs Inception 3a … 5b with the max-pools between stages and the aux heads after 4a
and 4d.

These functions only assemble tinynet layers on symbolic tensors; they never touch arrays.
"""
from __future__ import annotations

import numpy as np

from tinynet.checks import check_flag
from tinynet.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ShapeError, concatenate


#: Table 1's Inception blocks: name → (#1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj).
PAPER_BLOCKS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

#: The blog post's blocks: Table 1's except 5a and 5b, whose #5×5 repeats the #5×5 reduce (32 and 48).
BLOG_BLOCKS = dict(PAPER_BLOCKS, **{
    "5a": (256, 160, 320, 32, 32, 128),
    "5b": (384, 192, 384, 48, 48, 128),
})

#: The small network's blocks: Table 1's with every width divided by 4 (all of them are multiples of 4).
SMALL_BLOCKS = {name: tuple(width // 4 for width in widths) for name, widths in PAPER_BLOCKS.items()}

#: The Inception stages in order, each with its blocks; a 3×3/2 max-pool ``pool{stage}_3x3_s2`` follows every
#: stage but the last.
BLOCK_STAGES = (("3", ("3a", "3b")), ("4", ("4a", "4b", "4c", "4d", "4e")), ("5", ("5a", "5b")))

#: The blocks an auxiliary classifier attaches to, and the head's name.
AUX_HEADS = {"4a": "aux1", "4d": "aux2"}

#: Layer-name prefixes of each part of every variant (the stem, then the stages), e.g. to group gradient norms.
STAGES = (("stem", ("conv1", "conv2")),) + BLOCK_STAGES


def _name(prefix, suffix):
    return None if prefix is None else f"{prefix}_{suffix}"


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_widths(who, **widths):
    """Refuse, before any layer is built, a width that is not an integer >= 1, naming the function and argument
    (a layer would name only itself, after the branches before it were built)."""
    for arg, value in widths.items():
        if not _is_int(value) or value < 1:
            raise ValueError(f"{who}: {arg} must be an integer >= 1, got {value!r}")


def inception_block(x, c1, r3, c3, r5, c5, pool_proj, name=None):
    """Inception module with dimension reductions (Figure 2(b)).

    Four branches on the same input, concatenated on channels; every convolution is followed by ReLU:

    1. 1×1 conv, ``c1`` filters;
    2. 1×1 conv ``r3`` (the "#3×3 reduce") → 3×3 conv ``c3``;
    3. 1×1 conv ``r5`` (the "#5×5 reduce") → 5×5 conv ``c5``;
    4. 3×3/1 max-pool ('same') → 1×1 conv ``pool_proj``.

    Shapes
    ------
    (N, H, W, C) → (N, H, W, c1 + c3 + c5 + pool_proj)

    Parameters
    ----------
    x : SymbolicTensor
    name : str, optional
        Prefix for the layer names (``'3a'`` gives ``3a_1x1``, ``3a_3x3_reduce``, ...).

    Raises
    ------
    ValueError
        If a width is not an integer >= 1 (before any layer is built).
    """
    _check_widths("inception_block", c1=c1, r3=r3, c3=c3, r5=r5, c5=c5, pool_proj=pool_proj)
    b1 = Conv2D(c1, 1, padding="same", activation="relu", name=_name(name, "1x1"))(x)
    b3 = Conv2D(r3, 1, padding="same", activation="relu", name=_name(name, "3x3_reduce"))(x)
    b3 = Conv2D(c3, 3, padding="same", activation="relu", name=_name(name, "3x3"))(b3)
    b5 = Conv2D(r5, 1, padding="same", activation="relu", name=_name(name, "5x5_reduce"))(x)
    b5 = Conv2D(c5, 5, padding="same", activation="relu", name=_name(name, "5x5"))(b5)
    bp = MaxPool2D(3, strides=1, padding="same", name=_name(name, "pool"))(x)
    bp = Conv2D(pool_proj, 1, padding="same", activation="relu", name=_name(name, "pool_proj"))(bp)
    return concatenate([b1, b3, b5, bp], axis=-1, name=_name(name, "output"))


def naive_inception_block(x, c1, c3, c5, name=None):
    """Naive Inception module (Figure 2(a)): 1×1, 3×3 and 5×5 convolutions and a 3×3/1 max-pool, side by side.

    Shapes
    ------
    (N, H, W, C) → (N, H, W, c1 + c3 + c5 + C): the pooling branch keeps all C input channels, which is why
    the output depth grows from stage to stage and the paper adds the 1×1 reductions.

    Raises
    ------
    ValueError
        If a width is not an integer >= 1 (before any layer is built).
    """
    _check_widths("naive_inception_block", c1=c1, c3=c3, c5=c5)
    b1 = Conv2D(c1, 1, padding="same", activation="relu", name=_name(name, "1x1"))(x)
    b3 = Conv2D(c3, 3, padding="same", activation="relu", name=_name(name, "3x3"))(x)
    b5 = Conv2D(c5, 5, padding="same", activation="relu", name=_name(name, "5x5"))(x)
    bp = MaxPool2D(3, strides=1, padding="same", name=_name(name, "pool"))(x)
    return concatenate([b1, b3, b5, bp], axis=-1, name=_name(name, "output"))


def aux_head(x, num_classes, name=None, flatten=True, dropout=0.7):
    """Auxiliary classifier (paper, section 5): avg-pool 5×5/3 'valid', 1×1 conv 128 + ReLU, Flatten,
    Dense 1024 + ReLU, Dropout 0.7, Dense ``num_classes`` + softmax.

    Shapes
    ------
    (N, 14, 14, C) → pool (N, 4, 4, C) → conv (N, 4, 4, 128) → (N, 2048) → (N, 1024) → (N, num_classes).
    With ``flatten=False`` (the blog post's code) the Dense layers act on the 4×4×128 tensor and the output is
    (N, 4, 4, num_classes).

    Raises
    ------
    ValueError / TypeError
        For a ``num_classes`` that is not an integer >= 1 or a ``flatten`` that is not a bool (``'no'`` would
        read as True), before any layer is built.
    """
    _check_widths("aux_head", num_classes=num_classes)
    check_flag("aux_head", "flatten", flatten)
    y = AvgPool2D(5, strides=3, padding="valid", name=_name(name, "pool"))(x)
    y = Conv2D(128, 1, padding="same", activation="relu", name=_name(name, "conv"))(y)
    if flatten:
        y = Flatten(name=_name(name, "flatten"))(y)
    y = Dense(1024, activation="relu", name=_name(name, "fc"))(y)
    y = Dropout(dropout, name=_name(name, "dropout"))(y)
    return Dense(num_classes, activation="softmax", name=_name(name, "output"))(y)


def check_network_arguments(who, num_classes, aux, input_shape):
    """Refuse, before any layer is built, a ``num_classes`` that is not an integer >= 2 (one class makes the
    softmax 1.0 whatever the input), an ``aux`` that is not a bool (``'no'`` would read as True) and an
    ``input_shape`` that is not ``(H, W, C)`` of integers >= 1, naming them."""
    if not _is_int(num_classes) or num_classes < 2:
        raise ValueError(f"{who}: num_classes must be an integer >= 2, got {num_classes!r}")
    check_flag(who, "aux", aux)
    check_input_shape(who, input_shape)


def check_input_shape(who, input_shape, least=1, why=""):
    """Refuse an ``input_shape`` that is not ``(H, W, C)`` of integers >= 1, or whose height or width is below
    ``least`` (``why`` says what needs that size), naming ``who`` and the shape. Too small raises
    :class:`~tinynet.layers.ShapeError` (a ``ValueError``), as the layer that could not take it would."""
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3 or not all(
            _is_int(d) and d >= 1 for d in input_shape):
        raise ValueError(f"{who}: input_shape must be (height, width, channels), three integers >= 1, "
                         f"got {input_shape!r}")
    if min(input_shape[0], input_shape[1]) < least:
        raise ShapeError(f"{who}: input_shape {tuple(input_shape)!r} is too small: {why}; give a height and width "
                         f"of at least {least}")


def check_blocks(who, blocks):
    """Refuse a ``blocks`` table that :func:`stack_blocks` could not build: a mapping with exactly the nine
    block names, each with six integer widths >= 1 (``#1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj``)."""
    names = [name for _, stage in BLOCK_STAGES for name in stage]
    if not isinstance(blocks, dict):
        raise TypeError(f"{who}: blocks must be a dict of block name -> 6 widths, got {type(blocks).__name__}")
    unknown, missing = sorted(set(blocks) - set(names), key=str), [n for n in names if n not in blocks]
    if unknown or missing:
        wrong = "; ".join(part for part in (f"unknown names {unknown}" if unknown else "",
                                            f"no widths for {missing}" if missing else "") if part)
        raise ValueError(f"{who}: blocks: {wrong}; the blocks are {names}")
    for name in names:
        widths = blocks[name]
        if not isinstance(widths, (tuple, list)) or len(widths) != 6 or not all(
                isinstance(w, (int, np.integer)) and not isinstance(w, (bool, np.bool_)) and w >= 1 for w in widths):
            raise ValueError(f"{who}: block {name!r} needs six integer widths >= 1 (#1x1, #3x3 reduce, #3x3, "
                             f"#5x5 reduce, #5x5, pool proj), got {widths!r}")


def stack_blocks(x, blocks, make_aux_head=None):
    """The Inception stages of every variant: 3a, 3b, max-pool, 4a … 4e, max-pool, 5a, 5b.

    Each block is :func:`inception_block` with the widths ``blocks[name]``; the max-pools are 3×3/2 'same'
    (``pool3_3x3_s2``, ``pool4_3x3_s2``). When ``make_aux_head`` is given, it is called on the outputs of 4a and 4d
    (:data:`AUX_HEADS`) right after the block, so layers are created in the order they run.

    Shapes
    ------
    (N, H, W, C) → (N, ⌈H/4⌉, ⌈W/4⌉, c1 + c3 + c5 + pool_proj of 5b)

    Parameters
    ----------
    x : SymbolicTensor
        The stem's output.
    blocks : dict
        Block name → ``(#1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj)``, e.g. :data:`PAPER_BLOCKS`.
    make_aux_head : callable, optional
        ``make_aux_head(x, name=...)`` builds one auxiliary classifier and returns its output; None adds none.

    Returns
    -------
    (SymbolicTensor, list of SymbolicTensor)
        The output of 5b, and the aux heads' outputs ``[aux1, aux2]`` (empty without ``make_aux_head``).
    """
    check_blocks("stack_blocks", blocks)
    aux_outputs = []
    last_stage = BLOCK_STAGES[-1][0]
    for stage, names in BLOCK_STAGES:
        for name in names:
            x = inception_block(x, *blocks[name], name=name)
            if make_aux_head is not None and name in AUX_HEADS:
                aux_outputs.append(make_aux_head(x, name=AUX_HEADS[name]))
        if stage != last_stage:
            x = MaxPool2D(3, strides=2, padding="same", name=f"pool{stage}_3x3_s2")(x)
    return x, aux_outputs
