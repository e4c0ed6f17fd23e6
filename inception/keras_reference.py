"""GoogLeNet written with Keras 3 layers, line for line beside :mod:`inception.googlenet` (same layer names).

This is the reference the parity tests and ``python -m inception check-keras`` compare tinynet with:
``tinynet.interop.keras.from_keras(keras_googlenet(...))`` must give the same outputs and gradients as Keras.

The paper variant needs local response normalisation, which Keras does not ship;
:class:`LocalResponseNormalization` (Caffe's formula written with ``keras.ops``) lives in
:mod:`tinynet.interop.keras` so that ``to_keras`` can produce it too, and is re-exported here.

Importing this module imports Keras: set ``KERAS_BACKEND=jax`` first for the gradient comparisons.
"""
from __future__ import annotations

import keras
from keras import layers

from tinynet.interop.keras import LocalResponseNormalization

from .googlenet import BLOG_BLOCKS, PAPER_BLOCKS

__all__ = ["keras_googlenet", "keras_inception_block", "keras_aux_head", "LocalResponseNormalization"]


def keras_inception_block(x, c1, r3, c3, r5, c5, pool_proj, name):
    """Figure 2(b) in Keras: four branches, ReLU after every convolution, concatenated on channels."""
    b1 = layers.Conv2D(c1, 1, padding="same", activation="relu", name=f"{name}_1x1")(x)
    b3 = layers.Conv2D(r3, 1, padding="same", activation="relu", name=f"{name}_3x3_reduce")(x)
    b3 = layers.Conv2D(c3, 3, padding="same", activation="relu", name=f"{name}_3x3")(b3)
    b5 = layers.Conv2D(r5, 1, padding="same", activation="relu", name=f"{name}_5x5_reduce")(x)
    b5 = layers.Conv2D(c5, 5, padding="same", activation="relu", name=f"{name}_5x5")(b5)
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = layers.Conv2D(pool_proj, 1, padding="same", activation="relu", name=f"{name}_pool_proj")(bp)
    return layers.Concatenate(axis=-1, name=f"{name}_output")([b1, b3, b5, bp])


def keras_aux_head(x, num_classes, name, flatten=True, dropout=0.7):
    """The auxiliary classifier in Keras; ``flatten=False`` is the blog post's version (4×4×classes output)."""
    y = layers.AveragePooling2D(5, strides=3, padding="valid", name=f"{name}_pool")(x)
    y = layers.Conv2D(128, 1, padding="same", activation="relu", name=f"{name}_conv")(y)
    if flatten:
        y = layers.Flatten(name=f"{name}_flatten")(y)
    y = layers.Dense(1024, activation="relu", name=f"{name}_fc")(y)
    y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    return layers.Dense(num_classes, activation="softmax", name=f"{name}_output")(y)


def keras_googlenet(input_shape=(224, 224, 3), num_classes=1000, aux=True, variant="paper", dropout=True):
    """GoogLeNet as a Keras functional model; see :func:`inception.googlenet.googlenet` for the variants.

    Parameters
    ----------
    dropout : bool
        False sets every dropout rate to 0 (for comparing training-mode gradients, where random masks differ).

    Returns
    -------
    keras.Model
        Outputs ``[aux1, aux2, main]`` or ``main`` only when ``aux=False``; layer names as tinynet's.
    """
    if variant not in ("paper", "blog"):
        raise ValueError(f"keras_googlenet: variant must be 'paper' or 'blog', got {variant!r}")
    blog = variant == "blog"
    blocks = BLOG_BLOCKS if blog else PAPER_BLOCKS
    main_rate, aux_rate = (0.4, 0.7) if dropout else (0.0, 0.0)
    aux_outputs = []

    def run_blocks(x, names):
        for name in names:
            x = keras_inception_block(x, *blocks[name], name=name)
            if aux and name in ("4a", "4d"):
                head = "aux1" if name == "4a" else "aux2"
                aux_outputs.append(keras_aux_head(x, num_classes, head, flatten=not blog, dropout=aux_rate))
        return x

    inputs = keras.Input(input_shape, name="input")
    x = layers.Conv2D(64, 7, strides=2, padding="same", activation="relu", name="conv1_7x7_s2")(inputs)
    if blog:
        x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_3x3_s2")(x)
    if not blog:
        x = LocalResponseNormalization(5, 1e-4, 0.75, name="pool1_norm1")(x)
    x = layers.Conv2D(64, 1, padding="same", activation="relu", name="conv2_3x3_reduce")(x)
    x = layers.Conv2D(192, 3, padding="same", activation="relu", name="conv2_3x3")(x)
    if blog:
        x = layers.BatchNormalization(name="conv2_bn")(x)
    else:
        x = LocalResponseNormalization(5, 1e-4, 0.75, name="conv2_norm2")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2_3x3_s2")(x)
    x = run_blocks(x, ["3a", "3b"])
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool3_3x3_s2")(x)
    x = run_blocks(x, ["4a", "4b", "4c", "4d", "4e"])
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool4_3x3_s2")(x)
    x = run_blocks(x, ["5a", "5b"])
    if blog:
        x = layers.AveragePooling2D(7, padding="valid", name="avg_pool")(x)
        x = layers.Flatten(name="flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(main_rate, name="dropout")(x)
    main = layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, aux_outputs + [main] if aux else main, name=f"googlenet_{variant}")
