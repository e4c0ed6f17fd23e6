"""GoogLeNet written with Keras 3 layers, line for line beside :mod:`inception.googlenet` (same layer names).

This is the reference the parity tests and ``python -m inception check-keras`` compare tinynet with:
``tinynet.interop.keras.from_keras(keras_googlenet(...))`` must give the same outputs and gradients as Keras.

The paper variant needs local response normalisation, which Keras does not ship;
:class:`LocalResponseNormalization` (Caffe's formula written with ``keras.ops``) lives in
:mod:`tinynet.interop.keras` so that ``to_keras`` can produce it too, and is re-exported here.

Importing this module imports Keras: set ``KERAS_BACKEND=jax`` first for the gradient comparisons.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import keras
from keras import layers

from tinynet.checks import check_flag
from tinynet.interop.keras import LocalResponseNormalization

from .googlenet import BLOG_BLOCKS, PAPER_BLOCKS
from .paper import check_arguments_224

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

    Raises
    ------
    ValueError / TypeError
        As :func:`inception.googlenet.googlenet` for its arguments (an input too small for the variant included),
        and for a ``variant`` other than 'paper' or 'blog' or a ``dropout`` that is not a bool.

    Returns
    -------
    keras.Model
        Outputs ``[aux1, aux2, main]`` or ``main`` only when ``aux=False``; layer names as tinynet's.
    """
    if not isinstance(variant, str) or variant not in ("paper", "blog"):
        raise ValueError(f"keras_googlenet: variant must be 'paper' or 'blog', got {variant!r}")
    blog = variant == "blog"
    # the checks googlenet() makes, before Keras builds anything (aux='no' would read as True)
    check_arguments_224("keras_googlenet", input_shape, num_classes, aux, blog)
    check_flag("keras_googlenet", "dropout", dropout)
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


# ------------------------------------------------------------------------------------ the comparison
# The only code in inception/ that touches arrays: it feeds the same batch to Keras and to tinynet and
# measures how far apart the outputs and the gradients are.

def randomize_weights(keras_model, seed=0):
    """Give every weight a random value so that no parity check passes by accident.

    Kernels keep their Glorot values; biases, BN ``gamma``/``beta`` and moving statistics (which start
    at 0 and 1) become random, the moving variances staying positive.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in keras_model.layers:
        for var in layer.weights:
            shape, name = tuple(var.shape), var.path.rsplit("/", 1)[-1]
            if name == "kernel":
                continue
            if name in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = 0.1 * rng.standard_normal(shape)
            var.assign(value.astype(var.dtype))


class ParityRow(NamedTuple):
    """One compared tensor of a :class:`ParityReport`."""

    kind: str         #: 'output', 'grad' or 'bn stat'
    name: str         #: the output's layer, 'input', or '<layer>/<weight>'
    shape: tuple
    abs_error: float  #: ``max |tinynet − keras|`` over the tensor
    rel_error: float  #: ``abs_error / max |keras|`` (abs_error when Keras' tensor is all zeros)


class ParityReport:
    """The result of :func:`compare_with_keras`: one row per output and per gradient.

    Attributes
    ----------
    rows : list of ParityRow
        ``(kind, name, shape, abs_error, rel_error)``; ``kind`` is 'output', 'grad' or 'bn stat'; the relative
        error is ``max |tinynet − keras| / max |keras|`` over the tensor.
    """

    def __init__(self, title):
        self.title = title
        self.rows = []

    def add(self, kind, name, tiny, ref):
        import numpy as np

        tiny, ref = np.asarray(tiny, dtype=np.float64), np.asarray(ref, dtype=np.float64)
        if tiny.shape != ref.shape:
            raise AssertionError(f"{kind} {name}: tinynet shape {tiny.shape}, Keras shape {ref.shape}")
        err = float(np.abs(tiny - ref).max()) if tiny.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        self.rows.append(ParityRow(kind, name, tiny.shape, err, err / scale if scale > 0 else err))

    @staticmethod
    def _error(row, relative):
        return row.rel_error if relative else row.abs_error

    def max_error(self, kind, relative=False):
        """The largest absolute (or relative) error over the rows of that kind; 0 when there are none."""
        return max((self._error(r, relative) for r in self.rows if r.kind == kind), default=0.0)

    def worst(self, kind, relative=False):
        """The row with the largest (abs or rel) error of that kind."""
        rows = [r for r in self.rows if r.kind == kind]
        return max(rows, key=lambda r: self._error(r, relative)) if rows else None

    def table(self, grads="all"):
        """Text table; ``grads='summary'`` keeps the input gradient and the worst weight gradients only."""
        rows = self.rows
        if grads == "summary":
            weight_rows = sorted((r for r in rows if r.kind == "grad" and r.name != "input"),
                                 key=lambda r: -r.rel_error)
            rows = ([r for r in rows if r.kind != "grad" or r.name == "input"] + weight_rows[:8])
        lines = [self.title, f"  {'what':<8} {'tensor':<34} {'shape':<22} {'max abs err':>12} {'max rel err':>12}"]
        for kind, name, shape, abs_err, rel_err in rows:
            lines.append(f"  {kind:<8} {name:<34} {str(shape):<22} {abs_err:>12.2e} {rel_err:>12.2e}")
        n = sum(1 for r in self.rows if r.kind == "grad")
        if grads == "summary" and n:
            lines.append(f"  ({n} gradients in all: the input's and the 8 worst weight gradients shown)")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


@contextlib.contextmanager
def float64_mode():
    """Run Keras (JAX x64), and tinynet, in float64 inside the block; restore everything afterwards.

    Keras 3 forces its type promotion to 32 bits outside TensorFlow (``BIT64_TO_BIT32_DTYPE`` in
    ``keras.src.backend.common.dtypes``), even with JAX's x64 enabled. So ``ops.mean`` (GlobalAveragePooling2D)
    and BatchNormalization compute float64 tensors in float32, ~1e-8 relative, and a float64 comparison at
    1e-10 would measure Keras' rounding, not tinynet's. Inside this block float64 promotes to float64, as
    JAX itself does with x64 on.
    """
    import jax
    import keras
    from keras.src.backend.common import dtypes as keras_dtypes

    import tinynet

    old = (bool(jax.config.jax_enable_x64), keras.config.floatx(), tinynet.floatx(), keras.config.dtype_policy())
    old_rule = keras_dtypes.BIT64_TO_BIT32_DTYPE.get("float64")
    jax.config.update("jax_enable_x64", True)
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # Keras caches its global policy at first use: set it too
    tinynet.set_floatx("float64")
    keras_dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64"
    try:
        yield
    finally:
        keras_dtypes.BIT64_TO_BIT32_DTYPE["float64"] = old_rule
        jax.config.update("jax_enable_x64", old[0])
        keras.config.set_floatx(old[1])
        keras.config.set_dtype_policy(old[3])
        tinynet.set_floatx(old[2])


def compare_with_keras(keras_model, x, training=False, gradients=True, seed=0):
    """Run a Keras model and its :func:`~tinynet.interop.keras.from_keras` twin on ``x``; measure the gaps.

    Keras runs statelessly (``model.stateless_call``, jit-compiled) under JAX; the gradient is that of
    ``f = Σ_k Σ u_k · y_k`` over all outputs ``y_k`` with fixed random weights ``u_k``, taken with
    ``jax.vjp`` on the Keras side and ``Model.backward`` on tinynet's, w.r.t. the input and every trainable
    weight. In training mode BatchNormalization uses batch statistics and its updated moving statistics are
    compared too (give the model dropout rates of 0: the random masks of the two frameworks differ).

    Parameters
    ----------
    keras_model : keras.Model (JAX backend)
    x : ndarray (N, H, W, C) in the model's dtype
    training : bool
    gradients : bool
        False compares the forward outputs (and in training mode the BN statistics) only.
    seed : int
        Seeds the upstream weights ``u_k``.

    Returns
    -------
    ParityReport
    """
    import jax
    import numpy as np

    from tinynet.interop.keras import from_keras

    tiny = from_keras(keras_model)
    mode = "training" if training else "inference"
    report = ParityReport(f"{keras_model.name}: input {tuple(x.shape)} {x.dtype}, {mode} mode")
    trainable = [v.value for v in keras_model.trainable_variables]
    non_trainable = [v.value for v in keras_model.non_trainable_variables]
    names = [t.name for t in tiny.outputs]  # from_keras keeps the outputs' order and layer names

    # tinynet first: its output shapes give the upstream gradients' shapes
    tiny_outs = tiny.forward(x, training=training)
    tiny_outs = list(tiny_outs) if len(names) > 1 else [tiny_outs]
    rng = np.random.default_rng(seed)
    upstream = [rng.standard_normal(o.shape).astype(x.dtype) for o in tiny_outs]

    def keras_forward(trainable_values, inputs):
        outputs, new_non_trainable = keras_model.stateless_call(trainable_values, non_trainable, inputs,
                                                                training=training)
        return (list(outputs) if len(names) > 1 else [outputs]), new_non_trainable

    @jax.jit
    def keras_run(trainable_values, inputs, upstream):
        if not gradients:
            outputs, stats = keras_forward(trainable_values, inputs)
            return outputs, stats, None
        outputs, vjp, stats = jax.vjp(keras_forward, trainable_values, inputs, has_aux=True)
        return outputs, stats, vjp(upstream)

    keras_outs, keras_stats, keras_grads = keras_run(trainable, x, upstream)
    for name, a, b in zip(names, tiny_outs, keras_outs):
        report.add("output", name, a, b)
    if training:
        _compare_bn_stats(report, keras_model, tiny, keras_stats)
    if not gradients:
        return report

    grad_trainable, grad_x = keras_grads
    tiny_gx = tiny.backward(upstream if len(names) > 1 else upstream[0])
    report.add("grad", "input", tiny_gx, grad_x)
    owner = {}
    for layer in keras_model.layers:
        for i, var in enumerate(layer.weights):
            owner[id(var)] = (layer.name, i, var.path.rsplit("/", 1)[-1])
    for var, g in zip(keras_model.trainable_variables, grad_trainable):
        layer_name, index, weight_name = owner[id(var)]
        report.add("grad", f"{layer_name}/{weight_name}", tiny.get_layer(layer_name).grads[index], g)
    return report


def _compare_bn_stats(report, keras_model, tiny, new_non_trainable):
    """Compare the moving statistics after one training step (tinynet updated them in ``forward``)."""
    for var, value in zip(keras_model.non_trainable_variables, new_non_trainable):
        layer_name, weight_name = var.path.rsplit("/", 1)
        layer = tiny.get_layer(layer_name.rsplit("/", 1)[-1])
        index = layer.weight_names.index(weight_name)
        report.add("bn stat", f"{layer.name}/{weight_name}", layer.weights[index], value)
