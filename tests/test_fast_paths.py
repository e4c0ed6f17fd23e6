"""The layers' fast paths against their plain code, and what training skips or recomputes.

* ``tinynet.set_fast_paths``: fused bias + ReLU (forward) and ReLU derivative + bias gradient (backward) in
  Conv2D and Dense give the plain path's outputs and gradients (float64, 1e-12), on every CPU backend;
* ``tinynet.set_keep_im2col``: a k×k convolution whose im2col matrix is over the limit keeps only its input
  and rebuilds its windows in backward; keeping the matrix gives bit-identical gradients;
* ``Model.backward(input_grads=False)``: the layers that read only model inputs skip their input gradient
  (the first convolution's col2im does not run), every parameter gradient is unchanged;
* GoogLeNet (small variant) trains the same with every combination of these settings.
* sibling 1×1 convolutions run as one product (:mod:`tinynet.fusion`) and give the separate layers' results.
* BatchNormalization through :func:`tinynet.kernels.batchnorm_forward` / ``batchnorm_backward`` gives the plain
  layer code's outputs, gradients and moving statistics (float64 to 1e-12, float32 to a few ulp), in training
  and inference, and falls back to the plain code where the kernels do not apply.
"""
import numpy as np
import pytest

import tinynet
from tinynet import Model, backend, fusion, kernels, losses
from tinynet.layers import BatchNormalization, Concatenate, Conv2D, Dense, Flatten, Input, MaxPool2D
from tinynet.layers.conv import ConvCache

from inception import googlenet


def _mixed_model():
    """Every fused case: ReLU, linear and sigmoid convolutions, with and without bias, 1×1 and k×k, strided,
    non-square; Dense with ReLU, linear and softmax; a fan-out and a concatenation."""
    x = Input((9, 7, 3))
    a = Conv2D(5, (3, 2), strides=(2, 1), padding="same", activation="relu", name="c_relu")(x)
    b = Conv2D(4, 1, activation=None, name="c_linear")(x)
    b = Conv2D(4, (2, 3), padding="same", activation="sigmoid", name="c_sigmoid")(b)
    b = Conv2D(5, 3, strides=(2, 1), padding="same", activation="relu", use_bias=False, name="c_nobias")(b)
    h = Concatenate(name="cat")([a, b])
    p = MaxPool2D(2, padding="same", name="pool")(h)
    u = Conv2D(6, 1, activation="relu", name="c_pointwise")(p)       # u and v: one fused 1×1 group
    v = Conv2D(3, 1, activation="relu", use_bias=False, name="c_sibling")(p)
    w = Conv2D(2, 1, activation=None, name="c_linear2")(p)           # another activation: runs alone
    h = Flatten(name="flat")(Concatenate(name="cat2")([u, v, w]))
    h = Dense(7, activation="relu", name="d_relu")(h)
    h = Dense(6, activation=None, name="d_linear")(h)
    return Model(x, Dense(3, activation="softmax", name="d_softmax")(h))


def _forward_backward(model, x, upstream, input_grads=True):
    y = model.forward(x, training=True)
    gx = model.backward(upstream, input_grads=input_grads)
    grads = [tinynet.to_numpy(g) for layer in model.layers for g in layer.grads if g is not None]
    return tinynet.to_numpy(y), (None if gx is None else tinynet.to_numpy(gx)), grads


@pytest.fixture
def float64():
    tinynet.set_floatx("float64")


@pytest.mark.parametrize("relu_inputs", ["random", "many zeros"])
def test_fast_paths_equal_the_plain_layer_code(xb, float64, relu_inputs):
    model = _mixed_model()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 9, 7, 3))
    if relu_inputs == "many zeros":  # ReLU's mask and the bias sums over rows that are mostly zero
        x[x < 0.5] = 0.0
    upstream = rng.standard_normal((4, 3))
    if xb.name == "cupy":
        model.to("gpu")
    with tinynet.fast_paths(False):
        plain = _forward_backward(model, xb(x), xb(upstream))
    with tinynet.fast_paths(True):
        fast = _forward_backward(model, xb(x), xb(upstream))
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fast[1], plain[1], rtol=1e-12, atol=1e-15)
    assert len(fast[2]) == len(plain[2]) == 18
    for f, p in zip(fast[2], plain[2]):
        np.testing.assert_allclose(f, p, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_paths_keep_the_dtype_and_propagate_nan(xb, dtype):
    tinynet.set_floatx(dtype)
    x = Input((4, 4, 2))
    model = Model(x, Conv2D(3, 3, padding="same", activation="relu")(x))
    if xb.name == "cupy":
        model.to("gpu")
    data = np.random.default_rng(0).standard_normal((2, 4, 4, 2)).astype(dtype)
    data[0, 1, 1, 0] = np.nan
    with tinynet.fast_paths(False):
        plain = tinynet.to_numpy(model.forward(xb(data)))
    with tinynet.fast_paths(True):
        fast = tinynet.to_numpy(model.forward(xb(data)))
    assert fast.dtype == np.dtype(dtype)
    assert np.isnan(fast).any()
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(plain))
    np.testing.assert_allclose(fast, plain, rtol=1e-6 if dtype == "float32" else 1e-12)


def test_kxk_convolutions_keep_their_input_not_their_im2col_matrix():
    model = _mixed_model()
    x = np.random.default_rng(0).standard_normal((2, 9, 7, 3)).astype(np.float32)
    model.forward(x)  # the default keeps matrices up to 4 MiB: these are a few hundred bytes
    caches = {node.layer.name: cache.data for node, cache in model._tape
              if isinstance(getattr(cache, "data", None), ConvCache)}
    assert caches["c_relu"].cols2d is not None
    tinynet.set_keep_im2col(caches["c_relu"].cols2d.nbytes / 2 ** 20 * 0.99)  # just under its size: rebuilt
    model.forward(x)
    caches = {node.layer.name: cache.data for node, cache in model._tape
              if isinstance(getattr(cache, "data", None), ConvCache)}
    assert caches["c_relu"].cols2d is None and caches["c_relu"].x.shape == (2, 9, 7, 3)
    assert caches["c_linear2"].cols2d is not None  # a 1×1 keeps its reshape (a view of x: no memory)
    tinynet.set_keep_im2col(True)
    model.forward(x)
    caches = {node.layer.name: cache.data for node, cache in model._tape
              if isinstance(getattr(cache, "data", None), ConvCache)}
    assert caches["c_relu"].cols2d.shape == (2 * 5 * 7, 3 * 2 * 3)


def test_recomputing_im2col_gives_identical_gradients(xb, float64):
    model = _mixed_model()
    if xb.name == "cupy":
        model.to("gpu")
    rng = np.random.default_rng(2)
    x, upstream = xb(rng.standard_normal((3, 9, 7, 3))), xb(rng.standard_normal((3, 3)))
    tinynet.set_keep_im2col(True)
    kept = _forward_backward(model, x, upstream)
    tinynet.set_keep_im2col(False)
    rebuilt = _forward_backward(model, x, upstream)
    for a, b in zip(kept[2] + [kept[1]], rebuilt[2] + [rebuilt[1]]):
        np.testing.assert_array_equal(a, b)


def test_backward_without_input_grads_skips_the_first_layers_input_gradient(monkeypatch, float64):
    model = _mixed_model()
    rng = np.random.default_rng(3)
    x, upstream = rng.standard_normal((2, 9, 7, 3)), rng.standard_normal((2, 3))
    full = _forward_backward(model, x, upstream)
    calls = []
    real = kernels.col2im
    monkeypatch.setattr(kernels, "col2im", lambda cols, shape, *a: calls.append(shape) or real(cols, shape, *a))
    _forward_backward(model, x, upstream)
    assert (2, 9, 7, 3) in calls  # c_relu's input gradient: the image's shape
    calls.clear()
    skipped = _forward_backward(model, x, upstream, input_grads=False)
    assert skipped[1] is None
    assert (2, 9, 7, 3) not in calls and calls  # the later k×k convolutions still run theirs
    np.testing.assert_array_equal(skipped[0], full[0])
    for a, b in zip(skipped[2], full[2]):
        np.testing.assert_array_equal(a, b)


def test_input_grads_false_with_a_layer_class_that_cannot_skip(float64):
    """A subclass that overrides ``_backward`` (or ``backward``) with the old signature gets the full call."""
    class OldConv(Conv2D):
        def _backward(self, gy, cache):
            return super()._backward(gy, cache)

    class OldDense(Dense):
        def backward(self, grad_output, cache):
            return super().backward(grad_output, cache)

    x = Input((5, 5, 2))
    h = OldConv(3, 3, activation="relu")(x)
    y = OldDense(2)(Flatten()(h))
    model = Model(x, y)
    data = np.random.default_rng(0).standard_normal((2, 5, 5, 2))
    model.forward(data)
    assert model.backward(np.ones((2, 2)), input_grads=False) is None
    assert all(g is not None for layer in model.layers for g in layer.grads)


def test_fit_gives_the_same_weights_with_every_setting():
    """The small GoogLeNet, two SGD steps: the fast paths, im2col kept or rebuilt, all give the same weights."""
    tinynet.set_floatx("float64")
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 32, 32, 1)), np.arange(4) % 3
    results = []
    for fast, keep in [(False, True), (True, True), (True, False), (False, False)]:
        tinynet.set_fast_paths(fast)
        tinynet.set_keep_im2col(keep)
        tinynet.set_seed(0)
        model = googlenet(input_shape=(32, 32, 1), num_classes=3, variant="small")
        opt = tinynet.optimizers.SGD(learning_rate=0.05, momentum=0.9).attach(model)
        for _ in range(2):
            outs = model.forward(x, training=True)
            _, _, grads = losses.weighted_loss(outs if isinstance(outs, list) else [outs], y,
                                               [0.3] * (len(model.outputs) - 1) + [1.0])
            model.backward(grads if len(grads) > 1 else grads[0], input_grads=False)
            opt.step()
        results.append([np.array(w) for w in model.get_weights()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("value", ["no", None, -1, float("nan")])
def test_settings_refuse_what_they_do_not_mean(value):
    with pytest.raises(TypeError, match="expected True or False"):
        tinynet.set_fast_paths(value)
    with pytest.raises(TypeError, match="expected True, False or a size in MiB"):
        tinynet.set_keep_im2col(value)


def test_keep_im2col_limits():
    tinynet.set_keep_im2col(True)
    assert tinynet.keep_im2col() == float("inf") and backend.keeps_im2col(2 ** 40)
    tinynet.set_keep_im2col(False)
    assert tinynet.keep_im2col() == 0 and not backend.keeps_im2col(1)
    tinynet.set_keep_im2col(2)
    assert backend.keeps_im2col(2 * 2 ** 20) and not backend.keeps_im2col(2 * 2 ** 20 + 1)


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("TINYNET_FAST_PATHS", "0")
    assert backend._env_flag("TINYNET_FAST_PATHS", True) is False
    monkeypatch.setenv("TINYNET_FAST_PATHS", "maybe")
    with pytest.warns(UserWarning, match="TINYNET_FAST_PATHS"):
        assert backend._env_flag("TINYNET_FAST_PATHS", True) is True
    for value, limit in [("inf", float("inf")), ("0", 0.0), ("16", 16.0), ("", backend.DEFAULT_KEEP_IM2COL_MIB)]:
        monkeypatch.setenv("TINYNET_KEEP_IM2COL", value)
        assert backend._env_keep() == limit
    monkeypatch.setenv("TINYNET_KEEP_IM2COL", "lots")
    with pytest.warns(UserWarning, match="TINYNET_KEEP_IM2COL"):
        assert backend._env_keep() == backend.DEFAULT_KEEP_IM2COL_MIB


def test_backward_without_retaining_the_tape_frees_caches_and_gives_the_same_gradients(float64):
    model = _mixed_model()
    rng = np.random.default_rng(4)
    x, upstream = rng.standard_normal((2, 9, 7, 3)), rng.standard_normal((2, 3))
    kept = _forward_backward(model, x, upstream)
    model.backward(upstream)  # the tape is retained by default: backward runs again
    model.forward(x, training=True)
    model.backward(upstream, retain_tape=False)
    freed = [tinynet.to_numpy(g) for layer in model.layers for g in layer.grads if g is not None]
    for a, b in zip(kept[2], freed):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward(upstream)


def test_sibling_pointwise_convolutions_are_found_and_fused(monkeypatch):
    model = _mixed_model()
    groups = {id(group): group for group in fusion.find_groups(model.nodes).values()}
    assert [[layer.name for layer in g.layers] for g in groups.values()] == [["c_pointwise", "c_sibling"]]
    net = googlenet(input_shape=(224, 224, 3), variant="paper")
    blocks = {id(group): group for group in fusion.find_groups(net.nodes).values()}
    assert len(blocks) == 9 and all(len(g.layers) == 3 for g in blocks.values())  # 1×1, 3×3 reduce, 5×5 reduce
    ran = []
    real = Conv2D._forward
    monkeypatch.setattr(Conv2D, "_forward", lambda self, *a, **k: ran.append(self.name) or real(self, *a, **k))
    x = np.random.default_rng(0).standard_normal((2, 9, 7, 3)).astype(np.float32)
    model.predict(x)
    assert "c_pointwise" not in ran and "c_sibling" not in ran and "c_linear2" in ran
    ran.clear()
    with tinynet.fast_paths(False):
        model.predict(x)
    assert "c_pointwise" in ran and "c_sibling" in ran


def test_a_fused_member_that_the_loss_does_not_reach(float64):
    """Two 1×1 siblings, one of them a model output that gets no gradient: its layer's gradients are zeros,
    the other's equal the plain path's."""
    x = Input((4, 4, 3))
    a = Conv2D(2, 1, activation="relu", name="a")(x)
    b = Conv2D(3, 1, activation="relu", name="b")(x)
    model = Model(x, [a, Dense(2, name="head")(Flatten()(b))])
    rng = np.random.default_rng(5)
    data, upstream = rng.standard_normal((2, 4, 4, 3)), rng.standard_normal((2, 2))
    results = []
    for fast in (False, True):
        with tinynet.fast_paths(fast):
            model.forward(data)
            gx = model.backward([None, upstream])
            results.append([gx] + [np.array(g) for layer in model.layers for g in layer.grads if g is not None])
    assert not results[1][1].any() and not results[1][2].any()  # layer 'a': zeros
    for p, f in zip(*results):
        np.testing.assert_allclose(f, p, rtol=1e-12, atol=1e-15)


def test_the_walk_drops_each_activation_after_its_last_reader(monkeypatch):
    """Inference holds only the activations still to be read: when the third layer runs, the first layer's
    output (read only by the second) is already freed; a model output is kept to the end."""
    import weakref

    from tinynet.layers.base import Layer

    x = Input((6,))
    a = Dense(5, name="a")(x)
    b = Dense(4, name="b")(a)
    c = Dense(3, name="c")(b)
    model = Model(x, c)
    refs, alive_at_c = {}, {}
    real = Layer.forward

    def forward(self, inputs, training=False):
        if self.name == "c":
            alive_at_c.update({name: ref() is not None for name, ref in refs.items()})
        y, cache = real(self, inputs, training)
        refs[self.name] = weakref.ref(y)
        return y, cache

    monkeypatch.setattr(Layer, "forward", forward)
    model.predict(np.ones((2, 6)))
    assert alive_at_c == {"a": False, "b": True}
    two_outputs = Model(x, [a, c])
    refs.clear()
    two_outputs.predict(np.ones((2, 6)))
    assert alive_at_c == {"a": True, "b": True}


# ------------------------------------------------------------------------------- BatchNormalization
# odd shapes; (N, C) as after a Dense layer; batch 1 (2-D: one row, so the variance is 0); one shape of more
# than the Numba kernels' NumPy threshold (65536 elements), one with a partial block of 8 channels
BN_SHAPES = [(4, 5, 3, 7), (6, 5), (1, 4, 4, 3), (1, 6), (3, 7, 11, 2), (2, 40, 40, 21)]


@pytest.fixture
def bn_jit_at_every_size(monkeypatch):
    """Numba's batch-normalisation kernels run their compiled loops even on the small shapes."""
    if backend.numba_available():
        from tinynet.kernels import numba_kernels

        monkeypatch.setattr(numba_kernels, "_NUMPY_BELOW", 0)


def _bn_run(layer, x, gy, training):
    """Forward and backward of one BatchNormalization call: y, gx, the two gradients, the moving statistics."""
    y, cache = layer.forward(x, training=training)
    gx, grads = layer.backward(gy, cache)
    return [tinynet.to_numpy(a) for a in (y, gx, *grads[:2], layer.weights[2], layer.weights[3])]


def _bn_layer(shape, dtype, rng, xb):
    """A built layer with random gamma, beta and moving statistics (on the device of ``xb``)."""
    layer = BatchNormalization(momentum=0.9, dtype=dtype)
    layer._build_for(shape[1:])
    c = shape[-1]
    layer.weights[:] = [xb(rng.standard_normal(c).astype(dtype)), xb(rng.standard_normal(c).astype(dtype)),
                        xb(rng.standard_normal(c).astype(dtype)), xb((rng.random(c) + 0.5).astype(dtype))]
    return layer


def _bn_both_paths(shape, dtype, training, xb, x=None):
    """The same call with fast paths off, then on, from the same weights: both results, and those weights."""
    rng = np.random.default_rng(sum(shape))
    if x is None:
        x = (rng.standard_normal(shape) * 3 + 1.5).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    layer = _bn_layer(shape, dtype, rng, xb)
    start = [w.copy() for w in layer.weights]
    results = []
    for fast in (False, True):
        layer.weights[:] = [w.copy() for w in start]
        with tinynet.fast_paths(fast):
            results.append(_bn_run(layer, xb(x), xb(gy), training))
    return results + [[tinynet.to_numpy(w) for w in start]]


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_batchnorm_fast_path_equals_the_plain_layer_code(xb, bn_jit_at_every_size, float64, shape, training):
    plain, fast, start = _bn_both_paths(shape, np.float64, training, xb)
    for name, f, p in zip(["y", "gx", "g_gamma", "g_beta", "moving_mean", "moving_variance"], fast, plain):
        assert f.dtype == np.float64 and f.shape == p.shape, name
        np.testing.assert_allclose(f, p, rtol=1e-12, atol=1e-14, err_msg=name)
    # training moves the moving statistics (on both paths alike, as checked above); inference leaves them
    assert np.array_equal(fast[4], start[2]) != training and np.array_equal(fast[5], start[3]) != training


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("shape", [(4, 5, 3, 7), (6, 5), (1, 6), (2, 40, 40, 21)], ids=lambda s: "x".join(map(str, s)))
def test_batchnorm_fast_path_in_float32(xb, bn_jit_at_every_size, shape, training):
    """float32 stays float32 and agrees with the plain code to a few ulp (on the CPU the kernels sum each
    channel in NumPy's order, so the results are in fact the same bits)."""
    plain, fast, _ = _bn_both_paths(shape, np.float32, training, xb)
    for name, f, p in zip(["y", "gx", "g_gamma", "g_beta", "moving_mean", "moving_variance"], fast, plain):
        assert f.dtype == np.float32, name
        if xb.name == "cupy":  # CuPy's reductions add in another order
            np.testing.assert_allclose(f, p, rtol=1e-5, atol=1e-5 * float(np.abs(p).max()), err_msg=name)
        else:
            np.testing.assert_array_max_ulp(f, p, maxulp=4)


def test_batchnorm_fast_path_with_non_finite_statistics(xb, bn_jit_at_every_size):
    """A NaN or an inf in the batch: the output shows it, and the moving statistics stay as they were, on both
    paths alike."""
    shape = (3, 4, 5, 6)
    rng = np.random.default_rng(9)
    for bad in (np.nan, np.inf):
        x = rng.standard_normal(shape).astype(np.float32)
        x[1, 2, 3, 4] = bad
        with np.errstate(invalid="ignore"):
            plain, fast, start = _bn_both_paths(shape, np.float32, True, xb, x=x)
        for result in (plain, fast):
            assert np.isnan(result[0][..., 4]).all() and np.isfinite(result[0][..., :4]).all()
            np.testing.assert_array_equal(result[4], start[2])
            np.testing.assert_array_equal(result[5], start[3])
        for f, p in zip(fast, plain):
            np.testing.assert_array_equal(np.isnan(f), np.isnan(p))
            # float32: the input gradient is a difference of terms of size ~1 (gy, its mean, x̂·mean(gy·x̂)), so
            # its rounding is ~1e-7 absolute (measured 2.4e-8 on an H200, where the kernel contracts to FMAs)
            np.testing.assert_allclose(f, p, rtol=1e-6, atol=1e-6)


def test_batchnorm_uses_the_kernels_only_where_they_apply(monkeypatch):
    """Fast paths on, features on the last axis of a C-contiguous input whose dtype is the weights': the kernels;
    fast paths off, another feature axis, a non-contiguous input or an input of another dtype: the plain code
    (with the same results)."""
    calls = []
    for name in ("batchnorm_forward", "batchnorm_backward"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)

    def run(layer, data, fast, training=True):
        calls.clear()
        with tinynet.fast_paths(fast):
            y, cache = layer.forward(data, training=training)
            gx, grads = layer.backward(gy if gy.shape == data.shape else gy[:, :, :, :5], cache)
        return list(calls), [tinynet.to_numpy(a) for a in (y, gx, *grads[:2])]

    layer = BatchNormalization()
    assert run(layer, x, True)[0] == ["batchnorm_forward", "batchnorm_backward"]
    assert run(layer, x, True, training=False)[0] == ["batchnorm_forward", "batchnorm_backward"]
    assert run(layer, x, False)[0] == []
    channels_second = BatchNormalization(axis=1)
    assert run(channels_second, x, True)[0] == []
    view = x[:, :, :, :5]  # not C-contiguous
    assert not view.flags.c_contiguous
    fused_view, plain_view = BatchNormalization(name="v1"), BatchNormalization(name="v2")
    got, results = run(fused_view, view, True)
    assert got == ["batchnorm_backward"]  # forward falls back; backward's kernel copies the strided gradient
    _, expected = run(plain_view, view, False)
    for a, b in zip(results, expected):
        np.testing.assert_array_equal(a, b)
    mixed, results = run(BatchNormalization(), x.astype(np.float64), True)  # cast to the layer's float32
    assert mixed == ["batchnorm_forward", "batchnorm_backward"]
    assert results[0].dtype == np.float32
