"""The GoogLeNet used by the benchmarks: ``inception.googlenet`` when it exists, else a local paper-variant copy.

The local copy (:func:`paper_googlenet`) only assembles tinynet layers with :mod:`inception.blocks`, following
Table 1 of Szegedy et al. 2014 (LRN after the first pool and the 3×3 conv, aux heads on 4a and 4d), with
outputs ``[aux1, aux2, main]`` like ``inception.googlenet``.
"""
from __future__ import annotations

from inception.blocks import aux_head, inception_block
from tinynet import Model
from tinynet.layers import (AvgPool2D, Conv2D, Dense, Dropout, Flatten, Input, LocalResponseNormalization,
                            MaxPool2D)

#: (name, #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj), Table 1
STAGES = [("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "pool",
          ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64), ("4c", 128, 128, 256, 24, 64, 64),
          ("4d", 112, 144, 288, 32, 64, 64), ("4e", 256, 160, 320, 32, 128, 128), "pool",
          ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128)]


def paper_googlenet(input_shape=(224, 224, 3), num_classes=1000, aux=True):
    """GoogLeNet as in the paper; returns a Model with outputs [aux1, aux2, main] (or [main] without aux)."""
    x = inputs = Input(input_shape, name="input")
    x = Conv2D(64, 7, strides=2, padding="same", activation="relu", name="conv1")(x)
    x = MaxPool2D(3, strides=2, padding="same", name="pool1")(x)
    x = LocalResponseNormalization(name="lrn1")(x)
    x = Conv2D(64, 1, activation="relu", name="conv2_reduce")(x)
    x = Conv2D(192, 3, padding="same", activation="relu", name="conv2")(x)
    x = LocalResponseNormalization(name="lrn2")(x)
    x = MaxPool2D(3, strides=2, padding="same", name="pool2")(x)
    heads, pools = [], 3
    for stage in STAGES:
        if stage == "pool":
            x = MaxPool2D(3, strides=2, padding="same", name=f"pool{pools}")(x)
            pools += 1
            continue
        x = inception_block(x, *stage[1:], name=stage[0])
        if aux and stage[0] in ("4a", "4d"):
            heads.append(aux_head(x, num_classes, name=f"aux{len(heads) + 1}"))
    x = AvgPool2D(7, strides=1, name="avgpool")(x)
    x = Flatten(name="flatten")(x)
    x = Dropout(0.4, name="dropout")(x)
    main = Dense(num_classes, activation="softmax", name="main")(x)
    return Model(inputs, heads + [main], name="googlenet")


def googlenet(input_shape=(224, 224, 3), num_classes=1000, aux=True):
    """``inception.googlenet(variant='paper')`` if the inception package has it, else :func:`paper_googlenet`."""
    try:
        from inception.googlenet import googlenet as project_googlenet
    except ImportError:
        return paper_googlenet(input_shape, num_classes, aux), "benchmarks/_tinynet_googlenet.py"
    return project_googlenet(input_shape=input_shape, num_classes=num_classes, aux=aux,
                             variant="paper"), "inception.googlenet"
