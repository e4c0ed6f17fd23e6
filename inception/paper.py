"""The 224×224 GoogLeNets: the paper's network (Table 1, Figure 3) and the blog post's Keras version of it.

:func:`googlenet_paper` follows Szegedy et al. 2014:

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
sizes. Global average pooling makes any input size work without the aux heads; the aux heads need 4a ≥ 5×5, that
is at least 65×65, and the blog variant's ``AvgPool2D(7)`` needs 5b ≥ 7×7, at least 193×193 (smaller inputs are
refused before any layer is built).
The stem and the classifier are written here; the Inception stages and the aux heads come from
:func:`inception.blocks.stack_blocks` with :data:`~inception.blocks.PAPER_BLOCKS`.

:func:`googlenet_blog` is the network exactly as the blog post's Keras code builds it (see ``docs/googlenet.md``):
BatchNormalization after conv1 and after the 3×3 conv (each after the ReLU, as ``Conv2D(..., activation='relu')``
then ``BatchNormalization()``), no LRN, ``AvgPool2D(7)`` 'valid' then Flatten instead of global pooling,
aux heads without Flatten (so each aux output is 4×4×classes), and 5a/5b with #5×5 = 32 and 48
(:data:`~inception.blocks.BLOG_BLOCKS`).

Both are registered in :mod:`inception.variants`; build them by name with :func:`inception.googlenet.googlenet`.
"""
from __future__ import annotations

from functools import partial

from tinynet import Model
from tinynet.layers import (AvgPool2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                            GlobalAveragePooling2D, Input, LocalResponseNormalization, MaxPool2D)

from .blocks import (BLOG_BLOCKS, PAPER_BLOCKS, aux_head, check_input_shape, check_network_arguments,
                     stack_blocks)


def googlenet_paper(input_shape=(224, 224, 3), num_classes=1000, aux=True):
    """The paper's GoogLeNet: LRN in the stem, global average pooling, aux heads with Flatten.

    Returns
    -------
    Model named ``'googlenet_paper'``
        Outputs ``[aux1, aux2, main]`` or only ``main`` when ``aux=False``; 6,998,552 parameters at 1000 classes
        without the aux heads.
    """
    return _googlenet_224(input_shape, num_classes, aux, blog=False)


def googlenet_blog(input_shape=(224, 224, 3), num_classes=1000, aux=True):
    """The blog post's GoogLeNet: BatchNormalization in the stem, ``AvgPool2D(7)`` + Flatten, 4×4 aux outputs.

    Returns
    -------
    Model named ``'googlenet_blog'``
        Outputs ``[aux1, aux2, main]`` or only ``main`` when ``aux=False``; 9,121,976 parameters at 1000 classes
        with the aux heads (Keras' count).
    """
    return _googlenet_224(input_shape, num_classes, aux, blog=True)


def check_arguments_224(who, input_shape, num_classes, aux, blog):
    """Refuse, naming ``who``, what :func:`~inception.blocks.check_network_arguments` refuses and an input too
    small for the network: before ~7 M weights are drawn, not in a layer deep inside that would name only itself.
    Every stride-2 stage is 'same', so 4a sees ⌈H/16⌉ and 5b ⌈H/32⌉ (width alike)."""
    check_network_arguments(who, num_classes, aux, input_shape)
    if blog:
        check_input_shape(who, input_shape, 193, "the classifier's AvgPool2D(7) 'valid' needs 5b's output "
                          "(⌈height/32⌉ × ⌈width/32⌉) to be at least 7×7")
    elif aux:
        check_input_shape(who, input_shape, 65, "the aux heads' 5×5 'valid' average pool needs 4a's output "
                          "(⌈height/16⌉ × ⌈width/16⌉) to be at least 5×5 (or pass aux=False)")


def _googlenet_224(input_shape, num_classes, aux, blog):
    """The stem and classifier of either 224 network around :func:`~inception.blocks.stack_blocks`."""
    variant = "blog" if blog else "paper"
    check_arguments_224(f"googlenet_{variant}", input_shape, num_classes, aux, blog)
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

    make_aux_head = partial(aux_head, num_classes=num_classes, flatten=not blog) if aux else None
    x, aux_outputs = stack_blocks(x, BLOG_BLOCKS if blog else PAPER_BLOCKS, make_aux_head)

    # classifier: the paper pools globally; the blog post pools 7×7 'valid' and flattens
    if blog:
        x = AvgPool2D(7, padding="valid", name="avg_pool")(x)
        x = Flatten(name="flatten")(x)
    else:
        x = GlobalAveragePooling2D(name="avg_pool")(x)
    x = Dropout(0.4, name="dropout")(x)
    main = Dense(num_classes, activation="softmax", name="output")(x)

    outputs = aux_outputs + [main] if aux else main
    return Model(inputs, outputs, name=f"googlenet_{variant}")


__all__ = ["googlenet_paper", "googlenet_blog"]
