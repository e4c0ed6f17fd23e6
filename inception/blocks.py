"""The Inception module (Figure 2 of Szegedy et al. 2014) and the auxiliary classifier head.

These functions only assemble tinynet layers on symbolic tensors; they never touch arrays.
"""
from __future__ import annotations

from tinynet.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, concatenate


def _name(prefix, suffix):
    return None if prefix is None else f"{prefix}_{suffix}"


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
    """
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
    """
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
    """
    y = AvgPool2D(5, strides=3, padding="valid", name=_name(name, "pool"))(x)
    y = Conv2D(128, 1, padding="same", activation="relu", name=_name(name, "conv"))(y)
    if flatten:
        y = Flatten(name=_name(name, "flatten"))(y)
    y = Dense(1024, activation="relu", name=_name(name, "fc"))(y)
    y = Dropout(dropout, name=_name(name, "dropout"))(y)
    return Dense(num_classes, activation="softmax", name=_name(name, "output"))(y)
