"""A GoogLeNet for small images (32×32 digits, MNIST, CIFAR): the paper's layout at a quarter of the width.

The 224×224 network reaches Inception 3a at 28×28 (÷8); here a reduced stem reaches it at 8×8 (÷4) and the
later stages keep the paper's down-sampling:

============================  ==========  ==============================================================
stage                         out (32)    layers (names)
============================  ==========  ==============================================================
conv 3×3/1, BN, ReLU          32×32×16    ``conv1_3x3``, ``conv1_bn``, ``conv1_relu``
max-pool 3×3/2                16×16×16    ``pool1_3x3_s2``
conv 1×1 16, conv 3×3 48, BN  16×16×48    ``conv2_3x3_reduce``, ``conv2_3x3``, ``conv2_bn``, ``conv2_relu``
max-pool 3×3/2                8×8×48      ``pool2_3x3_s2``
inception 3a, 3b              8×8×120     ``3a_*``, ``3b_*``
max-pool 3×3/2                4×4×120     ``pool3_3x3_s2``
inception 4a … 4e             4×4×208     ``4a_*`` … ``4e_*``; aux heads ``aux1_*`` (after 4a), ``aux2_*`` (4d)
max-pool 3×3/2                2×2×208     ``pool4_3x3_s2``
inception 5a, 5b              2×2×256     ``5a_*``, ``5b_*``
global avg-pool, dropout 40%  256         ``avg_pool``, ``dropout``
linear + softmax              classes     ``output``
============================  ==========  ==============================================================

The stem swaps the paper's 7×7/2 convolution for a 3×3/1 one (a 32×32 image has no pixels to spare) and its
LRN layers for BatchNormalization, as the blog post does (with momentum 0.9 rather than Keras' 0.99: the digits
give only 20 to 50 steps per epoch, too few for a 0.99 moving average to forget its initial 0 and 1, and the
test accuracy in inference mode would lag far behind); the Inception blocks are the paper's with every
width divided by 4 (:data:`~inception.blocks.SMALL_BLOCKS`), stacked by :func:`~inception.blocks.stack_blocks`
as in every variant. The aux heads follow the paper's recipe scaled to a 4×4 input:
avg-pool 2×2/2 (the paper's 5×5/3 takes 14×14 to 4×4; here 4×4 to 2×2), 1×1 conv 32 + ReLU, FC 128 + ReLU,
dropout 70%, linear + softmax.

Kernels feeding a ReLU start He-uniform instead of Keras' Glorot (:func:`he_rescale`), so the signal does not
fade through the 21 convolutions of the deepest path.

Outputs are ``[aux1, aux2, main]`` softmax probabilities (``[main]`` only with ``aux=False``): 421,018
parameters, 7.7 M multiply-adds per 32×32 image (10 classes, aux heads included). :func:`googlenet_small` is
registered as the ``'small'`` variant in :mod:`inception.variants`; ``python -m inception train`` trains it.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from tinynet import Model
from tinynet.layers import (Activation, AvgPool2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                            GlobalAveragePooling2D, Input, MaxPool2D)

from .blocks import (SMALL_BLOCKS, STAGES, check_blocks,  # SMALL_BLOCKS and STAGES re-exported (CLI, benchmarks)
                     check_network_arguments, stack_blocks)


def small_aux_head(x, num_classes, name, conv_filters=32, units=128, dropout=0.7):
    """The paper's auxiliary classifier scaled to a 4×4 input.

    Shapes
    ------
    (N, 4, 4, C) → avg-pool 2×2/2 (N, 2, 2, C) → conv 1×1 (N, 2, 2, 32) → (N, 128) → FC (N, 128)
    → dropout → (N, num_classes) softmax.
    """
    y = AvgPool2D(2, strides=2, padding="same", name=f"{name}_pool")(x)
    y = Conv2D(conv_filters, 1, activation="relu", name=f"{name}_conv")(y)
    y = Flatten(name=f"{name}_flatten")(y)
    y = Dense(units, activation="relu", name=f"{name}_fc")(y)
    y = Dropout(dropout, name=f"{name}_dropout")(y)
    return Dense(num_classes, activation="softmax", name=f"{name}_output")(y)


def googlenet_small(input_shape=(32, 32, 1), num_classes=10, aux=True, blocks=None):
    """Build the small GoogLeNet.

    Parameters
    ----------
    input_shape : (H, W, C), default (32, 32, 1)
        Any size from about 16×16 works (every pooling is 'same'); 32×32 gives the table above.
    num_classes : int, default 10
    aux : bool, default True
        Keep the two auxiliary classifiers (outputs ``[aux1, aux2, main]``).
    blocks : dict, optional
        Widths that replace some of :data:`~inception.blocks.SMALL_BLOCKS` (e.g. narrower blocks for tests).

    Returns
    -------
    tinynet.Model named ``'googlenet_small'``
    """
    check_network_arguments("googlenet_small", num_classes, aux, input_shape)
    if blocks is not None and not isinstance(blocks, dict):
        raise TypeError(f"googlenet_small: blocks must be a dict of block name -> 6 widths, got "
                        f"{type(blocks).__name__}")
    blocks = dict(SMALL_BLOCKS, **(blocks or {}))
    check_blocks("googlenet_small", blocks)  # an unknown name among the replacements would be ignored otherwise
    inputs = Input(input_shape, name="input")
    x = Conv2D(16, 3, padding="same", use_bias=False, name="conv1_3x3")(inputs)  # BN follows: no ReLU yet
    x = BatchNormalization(momentum=0.9, name="conv1_bn")(x)
    x = Activation("relu", name="conv1_relu")(x)
    x = MaxPool2D(3, strides=2, padding="same", name="pool1_3x3_s2")(x)
    x = Conv2D(16, 1, activation="relu", name="conv2_3x3_reduce")(x)
    x = Conv2D(48, 3, padding="same", use_bias=False, name="conv2_3x3")(x)
    x = BatchNormalization(momentum=0.9, name="conv2_bn")(x)
    x = Activation("relu", name="conv2_relu")(x)
    x = MaxPool2D(3, strides=2, padding="same", name="pool2_3x3_s2")(x)

    make_aux_head = partial(small_aux_head, num_classes=num_classes) if aux else None
    x, aux_outputs = stack_blocks(x, blocks, make_aux_head)

    x = GlobalAveragePooling2D(name="avg_pool")(x)
    x = Dropout(0.4, name="dropout")(x)
    main = Dense(num_classes, activation="softmax", name="output")(x)
    model = Model(inputs, aux_outputs + [main], name="googlenet_small")
    he_rescale(model)
    return model


def he_rescale(model):
    """Rescale every Conv2D/Dense kernel from Keras' Glorot-uniform to He-uniform (``he_uniform``).

    Glorot keeps the variance for linear layers; after a ReLU half of it is lost, so a path through the
    network's 21 convolutions starts with its signal shrunk by about 2^21 in variance and the first epochs
    stall. He's init draws from U(−l, l) with ``l = sqrt(6 / fan_in)``; the Glorot draw has
    ``l = sqrt(6 / (fan_in + fan_out))``, so multiplying by ``sqrt((fan_in + fan_out) / fan_in)`` turns one
    into the other without drawing new numbers. The softmax output layers keep Glorot.
    """
    for layer in model.layers:
        if isinstance(layer, (Conv2D, Dense)) and getattr(layer, "activation", None) == "relu":
            kernel = layer.weights[0]
            receptive = int(np.prod(kernel.shape[:-2])) if kernel.ndim > 2 else 1
            fan_in, fan_out = receptive * kernel.shape[-2], receptive * kernel.shape[-1]
            kernel *= kernel.dtype.type(np.sqrt((fan_in + fan_out) / fan_in))


__all__ = ["googlenet_small", "small_aux_head", "SMALL_BLOCKS", "STAGES"]
