"""Every layer's hand-written backward against central differences, in float64, tolerance 1e-7.

``tinynet.gradcheck`` uses a random upstream gradient (never all ones) and checks the input gradient and
every trainable weight, element by element for these small tensors. The window layers run over the same
products as the forward tests: kernel sizes 1, 2, 3, 5, 7 and non-square, strides 1-3 (also sh != sw),
'valid' and 'same' (the asymmetric cases included), odd and even sizes, batch 1 and 2.
"""

import numpy as np
import pytest

import tinynet
from tinynet import Model, backend, gradcheck
from tinynet.layers import (Activation, AvgPool2D, BatchNormalization, Concatenate, Conv2D, Dense, Dropout,
                            Flatten, GlobalAveragePooling2D, Input, LocalResponseNormalization, MaxPool2D, ReLU,
                            Softmax, concatenate)
from window_cases import WINDOW_CASES, case_id

TOL = 1e-7


def check(layer, input_shape, training=False, **kwargs):
    """Run the checker and assert on its report too (it raises on failure; the assert guards the tolerance)."""
    report = gradcheck.check_layer(layer, input_shape, training=training, tol=TOL, **kwargs)
    assert report.passed and report.max_error < TOL, str(report)
    return report


@pytest.fixture(autouse=True)
def _float64_numpy_kernels():
    """Layers hold float64 weights, as the checker needs; the reference NumPy kernels run the thousands of
    tiny forward passes (Numba's parallel launch costs more than the work at these sizes). The Numba
    kernels are checked on a subset below and against the loop references in test_layers_forward.py."""
    tinynet.set_floatx("float64")
    backend.set_cpu_kernels("numpy")


# ----------------------------------------------------------------------------------------------- window layers
@pytest.mark.parametrize("case", WINDOW_CASES, ids=case_id)
def test_conv2d_gradients(case):
    kernel, strides, padding, (n, h, w) = case
    report = check(Conv2D(2, kernel, strides=strides, padding=padding), (n, h, w, 2))
    assert {row.name.split("/")[-1] for row in report.rows} >= {"kernel", "bias"}  # parameters were checked


@pytest.mark.parametrize("case", WINDOW_CASES, ids=case_id)
def test_max_pool_gradients(case):
    pool, strides, padding, (n, h, w) = case
    check(MaxPool2D(pool, strides=strides, padding=padding), (n, h, w, 2))


@pytest.mark.parametrize("case", WINDOW_CASES, ids=case_id)
def test_avg_pool_gradients(case):
    pool, strides, padding, (n, h, w) = case
    check(AvgPool2D(pool, strides=strides, padding=padding), (n, h, w, 2))


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
@pytest.mark.parametrize("make", [
    lambda: Conv2D(3, (3, 2), strides=(2, 1), padding="same"),
    lambda: Conv2D(2, 1, strides=2),                     # pointwise, strided: no im2col
    lambda: Conv2D(2, 1, strides=(1, 3), padding="same"),
    lambda: MaxPool2D(3, strides=(1, 2), padding="same"),
    lambda: AvgPool2D((2, 3), strides=(2, 1), padding="same"),
], ids=["conv", "conv1x1-s2", "conv1x1-s1x3", "maxpool", "avgpool"])
def test_window_gradients_on_each_cpu_backend(make, kernels):
    backend.set_cpu_kernels(kernels)
    check(make(), (2, 5, 4, 2))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "softmax", "linear"])
def test_conv2d_with_activation_and_no_bias(activation):
    check(Conv2D(3, 3, padding="same", activation=activation), (2, 4, 5, 2))
    check(Conv2D(2, (1, 3), strides=(1, 2), use_bias=False, activation=activation), (1, 3, 6, 2))


@pytest.mark.parametrize("shape", [(2, 3, 3, 2), (1, 5, 2, 1), (3, 1, 1, 4)])
def test_global_average_pooling_gradients(shape):
    check(GlobalAveragePooling2D(), shape)


# ----------------------------------------------------------------------------------------------- core layers
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (2, 3, 2, 4)])
@pytest.mark.parametrize("activation", [None, "relu", "softmax", "tanh", "sigmoid"])
def test_dense_gradients(shape, activation):
    check(Dense(3, activation=activation), shape)


def test_dense_without_bias_gradients():
    check(Dense(4, use_bias=False), (2, 3, 2, 3))


@pytest.mark.parametrize("shape", [(2, 3, 4, 2), (3, 5)])
def test_flatten_gradients(shape):
    check(Flatten(), shape)


@pytest.mark.parametrize("make", [ReLU, lambda: Activation("relu"), lambda: Activation("sigmoid"),
                                  lambda: Activation("tanh"), lambda: Activation("softmax"),
                                  lambda: Activation("linear")],
                         ids=["ReLU", "relu", "sigmoid", "tanh", "softmax", "linear"])
def test_activation_gradients(make):
    check(make(), (2, 3, 4))


@pytest.mark.parametrize("shape, axis", [((3, 5), -1), ((2, 3, 2, 4), -1), ((2, 3, 2, 4), 1), ((2, 3, 2, 4), 2)])
def test_softmax_gradients(shape, axis):
    check(Softmax(axis=axis), shape)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("rate", [0.3, 0.6])
def test_dropout_gradients(rate, training):
    report = check(Dropout(rate, seed=5), (3, 4, 5), training=training)
    assert report.rows  # the input gradient was checked


@pytest.mark.parametrize("shapes, axis", [([(2, 3, 3, 1), (2, 3, 3, 4), (2, 3, 3, 2)], -1),
                                          ([(2, 2, 3, 2), (2, 1, 3, 2)], 1),
                                          ([(2, 3, 2, 2), (2, 3, 3, 2)], 2), ([(3, 2), (3, 5)], -1)])
def test_concatenate_gradients(shapes, axis):
    report = check(Concatenate(axis=axis), shapes)
    assert sum(row.name.startswith("input") for row in report.rows) == len(shapes)


# ----------------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape, axis", [((4, 3), -1), ((2, 3, 2, 3), -1), ((1, 3, 4, 2), -1), ((2, 3, 2, 2), 1)])
def test_batchnorm_gradients(shape, axis, training):
    layer = BatchNormalization(axis=axis, momentum=0.9)
    inp = Input(shape[1:])
    layer(inp)
    rng = np.random.default_rng(3)
    c = layer.weights[0].shape[0]
    layer.set_weights([rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(c),
                       rng.random(c) + 0.5])
    before = layer.get_weights()
    report = check(layer, shape, training=training)
    params = {row.name.split("/")[-1] for row in report.rows if not row.name.startswith("input")}
    assert params == {"gamma", "beta"}  # moving statistics are not trainable
    for old, new in zip(before, layer.get_weights()):  # the checker restores the moving statistics
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("size, alpha, beta, k", [(5, 1e-4, 0.75, 1.0), (5, 2.0, 0.75, 1.0), (3, 1.5, 0.6, 2.0),
                                                  (4, 2.0, 0.75, 1.0), (1, 1.0, 0.5, 1.0), (8, 3.0, 0.9, 0.5)])
def test_lrn_gradients(size, alpha, beta, k):
    """Large alphas make the cross-channel term of the gradient matter (1e-4 leaves it tiny)."""
    check(LocalResponseNormalization(size, alpha, beta, k), (2, 2, 3, 7))


# ----------------------------------------------------------------------------------------------- whole models
def branching_two_output_model():
    """One tensor fans out into convolution and pooling branches, concatenated, with two heads."""
    x = Input((6, 7, 3))
    a = Conv2D(2, 1, activation="relu", name="branch_1x1")(x)
    b = Conv2D(2, (3, 2), padding="same", activation="tanh", name="branch_3x2")(x)
    c = MaxPool2D(3, strides=1, padding="same", name="branch_pool")(x)
    c = Conv2D(2, 1, activation="sigmoid", name="pool_proj")(c)  # a bias straight into BN has zero gradient
    d = AvgPool2D(2, strides=1, padding="same", name="branch_avg")(x)
    merged = concatenate([a, b, c, d], name="merge")
    merged = BatchNormalization(name="bn")(merged)
    trunk = Conv2D(4, 3, strides=2, padding="same", activation="tanh", name="trunk")(merged)
    head1 = Dense(3, activation="softmax", name="head1")(GlobalAveragePooling2D()(trunk))
    aux = AvgPool2D(3, strides=2, name="aux_pool")(merged)
    aux = LocalResponseNormalization(3, alpha=1.0, name="aux_lrn")(aux)
    head2 = Dense(2, name="head2")(Dropout(0.4, seed=1)(Flatten()(aux)))
    return Model(x, [head1, head2])


@pytest.mark.parametrize("training", [False, True])
def test_branching_two_output_model(training):
    model = branching_two_output_model()
    report = gradcheck.check_model(model, np.random.default_rng(0).standard_normal((2, 6, 7, 3)),
                                   training=training, tol=TOL)
    assert report.passed and report.max_error < TOL, str(report)
    checked = {row.name for row in report.rows}
    assert {"branch_1x1/kernel", "pool_proj/kernel", "trunk/bias", "bn/gamma", "head1/kernel",
            "head2/kernel"} <= checked


def test_layer_called_twice_shares_weights():
    conv = Conv2D(3, 3, padding="same", activation="tanh", name="shared_conv")
    dense = Dense(3, name="shared_dense")
    x = Input((5, 4, 3))
    y = conv(conv(x))                     # same weights, two calls: their gradients add
    z = dense(dense(GlobalAveragePooling2D()(y)))
    model = Model(x, z)
    assert [layer.name for layer in model.layers].count("shared_conv") == 1
    report = gradcheck.check_model(model, tol=TOL)
    assert report.passed, str(report)


def test_directional_check_for_large_tensors():
    """Tensors above ``max_elements`` are checked along random directions; a correct layer still passes."""
    report = gradcheck.check_layer(Conv2D(8, 3, padding="same"), (2, 6, 6, 4), tol=TOL, max_elements=50)
    assert any("dirs" in row.method for row in report.rows) and report.passed


def test_checker_catches_a_wrong_gradient():
    """A layer whose backward is off by a transpose must fail: the checker is not vacuous."""

    class WrongDense(Dense):
        def backward(self, gy, cache):
            gx, grads = super().backward(gy, cache)
            return gx, [grads[0][::-1], grads[1]]   # rows of the kernel gradient swapped

    with pytest.raises(gradcheck.GradcheckError, match="kernel"):
        gradcheck.check_layer(WrongDense(3), (2, 4), tol=TOL)
    with pytest.raises(gradcheck.GradcheckError, match="kernel .* dirs"):  # along random directions too
        gradcheck.check_layer(WrongDense(3), (2, 4), tol=TOL, max_elements=1)


def test_directional_check_is_not_fooled_by_a_direction_nearly_orthogonal_to_the_gradient():
    """A correct demo model must pass however small one random projection of a gradient happens to be."""
    from tinynet.__main__ import demo_model

    report = gradcheck.check_model(demo_model(), tol=TOL, max_elements=200)
    assert report.passed, str(report)


# ----------------------------------------------------------------------------------------- the noise floor
def conv_bias_into_batchnorm():
    """A convolution's bias feeding BatchNormalization in training mode: its true gradient is exactly 0."""
    x = Input((5, 5, 2))
    y = BatchNormalization(name="bn")(Conv2D(3, 3, padding="same", name="conv")(x))
    return Model(x, Dense(4, name="dense")(Flatten()(y)))


def test_an_exactly_zero_gradient_passes_at_the_noise_floor():
    """BN subtracts the batch mean, so conv/bias has a zero gradient; its numeric estimate is rounding noise,
    a relative error of 1 that only the absolute noise floor can judge."""
    model = conv_bias_into_batchnorm()
    report = gradcheck.check_model(model, training=True, tol=TOL)
    bias = next(row for row in report.rows if row.name == "conv/bias")
    assert bias.rel_error > 0.5 and bias.abs_error < report.atol           # relative error meaningless, absolute tiny
    assert report.passed and report.max_error < TOL, str(report)
    assert "noise floor" in str(report)
    with pytest.raises(gradcheck.GradcheckError, match="conv/bias"):   # judged by the relative error alone
        gradcheck.check_model(model, training=True, tol=TOL, atol=0.0)


def test_the_noise_floor_does_not_hide_a_small_wrong_gradient():
    """A kernel gradient 0.1 % too large is far above the floor (about 1e-8 here) and must still fail."""

    class SlightlyWrongDense(Dense):
        def backward(self, gy, cache):
            gx, grads = super().backward(gy, cache)
            return gx, [grads[0] * 1.001, grads[1]]

    with pytest.raises(gradcheck.GradcheckError, match="kernel"):
        gradcheck.check_layer(SlightlyWrongDense(3), (2, 4), tol=TOL)
    report = gradcheck.check_layer(Dense(3), (2, 4), tol=TOL)
    assert 0 < report.atol < 1e-7


def test_the_check_leaves_the_model_as_it_found_it():
    """Weights (same objects, float32), device and input dtypes are restored after a float64 check."""
    tinynet.set_floatx("float32")
    model = conv_bias_into_batchnorm()
    before = [list(layer.weights) for layer in model.layers]
    gradcheck.check_model(model, training=True, tol=TOL)
    assert model.device == "cpu" and model.inputs[0].dtype == "float32"
    for layer, weights in zip(model.layers, before):
        assert all(a is b for a, b in zip(layer.weights, weights))
        assert all(w.dtype == np.float32 for w in layer.weights)
