"""GoogLeNet (Inception v1): the paper's network (Table 1, Figure 3) and the blog post's Keras version.

``googlenet(variant='paper')`` follows Szegedy et al. 2014:

==========================  ============  =====================================================
stage                       output (224)  layers (names)
==========================  ============  =====================================================
conv 7×7/2 + ReLU           112×112×64    ``conv1_7x7_s2``
max-pool 3×3/2, LRN         56×56×64      ``pool1_3x3_s2``, ``pool1_norm1``
conv 1×1 64, conv 3×3 192   56×56×192     ``conv2_3x3_reduce``, ``conv2_3x3``, ``conv2_norm2``
max-pool 3×3/2              28×28×192     ``pool2_3x3_s2``
inception 3a, 3b            28×28×480     ``3a_1x1``, ``3a_3x3_reduce``, ... ``3b_output``
max-pool 3×3/2              14×14×480     ``pool3_3x3_s2``
inception 4a … 4e           14×14×832     ``4a_*`` … ``4e_*``; aux heads ``aux1_*`` (after 4a), ``aux2_*`` (4d)
max-pool 3×3/2              7×7×832       ``pool4_3x3_s2``
inception 5a, 5b            7×7×1024      ``5a_*``, ``5b_*``
global avg-pool, dropout    1024          ``avg_pool``, ``dropout``
linear + softmax            classes       ``output``
==========================  ============  =====================================================

Every convolution has ReLU and 'same' padding; the max-pools are 'same' too, so a 224 input gives the table's
sizes. Global average pooling makes any input from about 32×32 up work (the aux heads need 4a ≥ 5×5, about 65×65).

``variant='blog'`` is the network exactly as the blog post's Keras code builds it (see ``docs/googlenet.md``):
BatchNormalization after conv1 and after the 3×3 conv (each after the ReLU, as ``Conv2D(..., activation='relu')``
then ``BatchNormalization()``), no LRN, ``AvgPool2D(7)`` 'valid' then Flatten instead of global pooling,
aux heads without Flatten (so each aux output is 4×4×classes), and 5a/5b with #5×5 = 32 and 48.

``variant='small'`` is the reduced network for small images, built by :func:`inception.small.googlenet_small`.
"""
from __future__ import annotations

from tinynet import Model
from tinynet.layers import (AvgPool2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                            GlobalAveragePooling2D, Input, LocalResponseNormalization, MaxPool2D)

from .blocks import aux_head, inception_block

#: The Inception blocks of Table 1: name → (#1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj).
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

#: The blog post's blocks: identical except 5a and 5b, whose #5×5 repeats the #5×5 reduce (32 and 48).
BLOG_BLOCKS = dict(PAPER_BLOCKS, **{
    "5a": (256, 160, 320, 32, 32, 128),
    "5b": (384, 192, 384, 48, 48, 128),
})

VARIANTS = ("paper", "blog", "small")


def _blocks(x, blocks, names, num_classes, aux, aux_flatten, aux_outputs):
    """Run the named Inception blocks in order; attach an aux head after 4a and 4d when ``aux``."""
    for name in names:
        x = inception_block(x, *blocks[name], name=name)
        if aux and name in ("4a", "4d"):
            head = "aux1" if name == "4a" else "aux2"
            aux_outputs.append(aux_head(x, num_classes, name=head, flatten=aux_flatten))
    return x


def googlenet(input_shape=(224, 224, 3), num_classes=1000, aux=True, variant="paper"):
    """Build GoogLeNet on tinynet.

    Parameters
    ----------
    input_shape : (H, W, C)
    num_classes : int
    aux : bool
        Add the two auxiliary classifiers (training only in the paper).
    variant : {'paper', 'blog', 'small'}
        'paper': Table 1 / Figure 3 (LRN, global average pooling); 'blog': the blog post's Keras code with its
        defects; 'small': the reduced network of :mod:`inception.small`.

    Returns
    -------
    Model
        Outputs ``[aux1, aux2, main]`` (aux1 after 4a, aux2 after 4d) or only ``main`` when ``aux=False``.
        Parameters at 1000 classes: paper 6,998,552 without aux heads; blog 9,121,976 with them (Keras' count).
    """
    if variant == "small":
        from .small import googlenet_small  # lazy: the small network lives in its own module

        return googlenet_small(input_shape=input_shape, num_classes=num_classes, aux=aux)
    if variant not in VARIANTS:
        raise ValueError(f"googlenet: variant must be one of {VARIANTS}, got {variant!r}")
    blog = variant == "blog"
    blocks = BLOG_BLOCKS if blog else PAPER_BLOCKS
    aux_outputs = []

    inputs = Input(input_shape, name="input")
    # stem: conv 7×7/2, max-pool, (LRN | BN), conv 1×1 → 3×3, (LRN | BN), max-pool
    x = Conv2D(64, 7, strides=2, padding="same", activation="relu", name="conv1_7x7_s2")(inputs)
    if blog:
        x = BatchNormalization(name="conv1_bn")(x)
    x = MaxPool2D(3, strides=2, padding="same", name="pool1_3x3_s2")(x)
    if not blog:
        x = LocalResponseNormalization(size=5, alpha=1e-4, beta=0.75, name="pool1_norm1")(x)
    x = Conv2D(64, 1, padding="same", activation="relu", name="conv2_3x3_reduce")(x)
    x = Conv2D(192, 3, padding="same", activation="relu", name="conv2_3x3")(x)
    x = (BatchNormalization(name="conv2_bn") if blog
         else LocalResponseNormalization(size=5, alpha=1e-4, beta=0.75, name="conv2_norm2"))(x)
    x = MaxPool2D(3, strides=2, padding="same", name="pool2_3x3_s2")(x)

    x = _blocks(x, blocks, ["3a", "3b"], num_classes, aux, not blog, aux_outputs)
    x = MaxPool2D(3, strides=2, padding="same", name="pool3_3x3_s2")(x)
    x = _blocks(x, blocks, ["4a", "4b", "4c", "4d", "4e"], num_classes, aux, not blog, aux_outputs)
    x = MaxPool2D(3, strides=2, padding="same", name="pool4_3x3_s2")(x)
    x = _blocks(x, blocks, ["5a", "5b"], num_classes, aux, not blog, aux_outputs)

    # head: the paper pools globally; the blog post pools 7×7 'valid' and flattens
    if blog:
        x = AvgPool2D(7, padding="valid", name="avg_pool")(x)
        x = Flatten(name="flatten")(x)
    else:
        x = GlobalAveragePooling2D(name="avg_pool")(x)
    x = Dropout(0.4, name="dropout")(x)
    main = Dense(num_classes, activation="softmax", name="output")(x)

    outputs = aux_outputs + [main] if aux else main
    return Model(inputs, outputs, name=f"googlenet_{variant}")
