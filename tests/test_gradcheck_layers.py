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


# ----------------------------------------------------------------------------------------------------- kinks
def relu_kink_model(conv=Conv2D):
    """1×1 ReLU convolutions (zero biases) reading a ReLU output: where a pixel's input is all exact zeros
    their pre-activation is exactly 0, so ±eps on a bias straddles ReLU's kink. ``conv`` builds the first of
    them (a subclass with a wrong backward, to show the kink handling hides nothing)."""
    tinynet.set_seed(0)
    x = Input((8, 7, 3))
    s = Conv2D(4, (2, 3), padding="same", activation="relu", name="stem")(x)
    y = concatenate([conv(3, 1, activation="relu", name="kinked_a")(s),
                     Conv2D(2, 1, activation="relu", name="kinked_b")(s)])
    y = Conv2D(4, 1, name="proj")(BatchNormalization(name="bn")(y))
    return Model(x, Dense(5, activation="softmax", name="head")(GlobalAveragePooling2D()(y)))


KINK_INPUTS = np.random.default_rng(0).standard_normal((2, 8, 7, 3))


@pytest.mark.parametrize("max_elements", [400, 0], ids=["elements", "directions"])
def test_a_correct_model_passes_with_probes_on_relu_kinks(max_elements):
    """Before, the central differences of the zero biases straddled the kink and the check failed (relative
    error 0.3-0.5) on a correct model; those probes are now found and checked beside the kink, and counted."""
    report = gradcheck.check_model(relu_kink_model(), KINK_INPUTS, training=True, tol=TOL, max_elements=max_elements)
    assert report.passed and report.max_error < TOL, str(report)
    assert set(report.kinks) == {"kinked_a/bias", "kinked_b/bias"} and all(n > 0 for n in report.kinks.values())
    assert "at kinks, checked beside them" in str(report)


def wrong_conv(wrong):
    """A Conv2D whose backward returns ``wrong(grad_input, [grad_kernel, grad_bias])``."""

    class WrongConv2D(Conv2D):
        def backward(self, grad_output, cache, input_grad=True):
            return wrong(*super().backward(grad_output, cache))

    return WrongConv2D


def one_kernel_entry_off(gx, grads):
    kernel = grads[0].copy()
    kernel[0, 0, 1, 2] *= 1 + 1e-5
    return gx, [kernel, grads[1]]


WRONG_BACKWARDS = {
    "everything scaled by 1+1e-5": (lambda gx, grads: (gx * (1 + 1e-5), [g * (1 + 1e-5) for g in grads]), "stem"),
    "one kernel entry off by 1e-5": (one_kernel_entry_off, "kinked_a/kernel"),
    "bias (all at kinks) scaled by 1+1e-5": (lambda gx, grads: (gx, [grads[0], grads[1] * (1 + 1e-5)]),
                                            "kinked_a/bias"),
}


@pytest.mark.parametrize("max_elements", [400, 0], ids=["elements", "directions"])
@pytest.mark.parametrize("case", list(WRONG_BACKWARDS))
def test_the_kink_handling_still_catches_a_slightly_wrong_backward(case, max_elements):
    """A backward wrong by 1e-5 fails, also where every probe of the tensor sits on a kink (the bias)."""
    wrong, failing = WRONG_BACKWARDS[case]
    report = gradcheck.check_model(relu_kink_model(wrong_conv(wrong)), KINK_INPUTS, training=True, tol=TOL,
                                   max_elements=max_elements, raise_on_failure=False)
    assert not report.passed, str(report)
    failed = [row.name for row in report.rows if not report.row_passed(row)]
    assert any(name.startswith(failing) for name in failed), str(report)
    if case.startswith("bias"):
        assert failed == ["kinked_a/bias"] and report.kinks["kinked_a/bias"] > 0, str(report)


# ------------------------------------------------------------------------------------------ the arguments
BAD_SETTINGS = [
    (dict(directions=0), ValueError, "directions must be an integer >= 1, got 0"),
    (dict(directions=-1), ValueError, "directions must be an integer >= 1, got -1"),
    (dict(directions=2.5), ValueError, "directions must be an integer >= 1"),
    (dict(eps=0), ValueError, "eps must be a finite number > 0, got 0"),
    (dict(eps=-1e-6), ValueError, "eps must be a finite number > 0"),
    (dict(eps=float("inf")), ValueError, "eps must be a finite number > 0"),
    (dict(tol=float("nan")), ValueError, "tol must be a finite number > 0, got nan"),
    (dict(tol=-1e-7), ValueError, "tol must be a finite number > 0"),
    (dict(tol=0), ValueError, "tol must be a finite number > 0"),
    (dict(atol=-1.0), ValueError, "atol must be a finite number >= 0"),
    (dict(atol=float("nan")), ValueError, "atol must be a finite number >= 0"),
    (dict(max_elements=-1), ValueError, "max_elements must be an integer >= 0"),
    (dict(seed="a"), ValueError, "seed must be an integer >= 0, got 'a'"),
    (dict(seed=-1), ValueError, "seed must be an integer >= 0"),
    (dict(training="yes"), TypeError, "training must be True or False"),
    (dict(raise_on_failure=None), TypeError, "raise_on_failure must be True or False"),
]


@pytest.mark.parametrize("settings, error, message", BAD_SETTINGS,
                         ids=[",".join(f"{k}={v!r}" for k, v in case[0].items()) for case in BAD_SETTINGS])
def test_checker_arguments_that_would_check_nothing_are_refused_before_any_work(settings, error, message):
    """directions=0 used to pass a broken backward ("0 dirs ... yes"), eps=0 to divide by zero, seed='a' to
    raise numpy's TypeError; each is refused naming the argument and its range, before any layer is built."""
    import re

    dense = Dense(3)
    with pytest.raises(error, match="check_layer: " + re.escape(message)):
        gradcheck.check_layer(dense, (2, 4), **settings)
    assert not dense.built                                              # refused before any work
    with pytest.raises(error, match="check_model: " + re.escape(message)):
        gradcheck.check_model(conv_bias_into_batchnorm(), **settings)


def test_checker_refuses_what_is_not_a_model_a_layer_or_a_shape():
    with pytest.raises(TypeError, match="check_model: model must be a tinynet Model, got Dense"):
        gradcheck.check_model(Dense(3))
    with pytest.raises(TypeError, match="check_layer: layer must be a tinynet Layer, got str"):
        gradcheck.check_layer("dense", (2, 4))
    with pytest.raises(TypeError, match="check_layer.. got an unexpected keyword argument 'directon'"):
        gradcheck.check_layer(Dense(3), (2, 4), directon=3)
    for shape in [(2,), (2, 0), [2, 4], (2, 4.0), 4]:
        with pytest.raises(ValueError, match="check_layer: input_shape must be a tuple"):
            gradcheck.check_layer(Dense(3), shape)


def test_whole_number_settings_are_taken_as_integers():
    report = gradcheck.check_layer(Dense(2), (2, 3), tol=TOL, directions=2.0, max_elements=0.0)
    assert {row.method for row in report.rows} == {"2 dirs"} and report.passed


# ------------------------------------------------------------------------ the noise floor is each tensor's own
class _DoubledBiasDense(Dense):
    """A Dense whose bias gradient is doubled (wrong by 100 %)."""

    def _backward(self, grad, cache, input_grad=True):
        gx, grads = super()._backward(grad, cache, input_grad)
        return gx, [grads[0], 2 * grads[1]]


def two_heads(small=Dense, big_bias=1e7):
    """One input, two heads: a correct Dense(64) whose bias is ``big_bias`` (large outputs) and a Dense(3)
    built by ``small``."""
    tinynet.set_seed(0)
    x = Input((8,))
    model = Model(x, [Dense(64, name="big")(x), small(3, name="small")(x)])
    model.get_layer("big").weights[1] = np.full(64, big_bias)
    return model


def test_a_wrong_gradient_beside_a_large_output_fails():
    """Before, one model-wide floor summed every output: 3.6 here, from the big head, so the small head's doubled
    bias gradient (error 0.5 of a gradient below 1) passed "by the noise floor", and the report printed a max
    relative error of 0. Each tensor's floor now sums only the outputs it reaches, and outputs are differenced
    one by one: the small head's bias is judged at a floor of about 1e-5 and fails."""
    xs = np.random.default_rng(0).standard_normal((2, 8)) * 1e3
    report = gradcheck.check_model(two_heads(_DoubledBiasDense), xs, tol=TOL, raise_on_failure=False)
    assert not report.passed, str(report)
    bias = next(row for row in report.rows if row.name == "small/bias")
    assert not report.row_passed(bias) and bias.rel_error > 0.4
    assert report.atols["small/bias"] < 1e-4 < 1 < report.atols["big/bias"]
    assert report.max_error > 0.4 and "small/bias" in str(report)
    with pytest.raises(gradcheck.GradcheckError, match="small/bias"):
        gradcheck.check_model(two_heads(_DoubledBiasDense), xs, tol=TOL)


def test_a_correct_model_with_a_large_second_head_passes():
    """A head with outputs of 1e4 beside a small one: every tensor, the small head's included, passes, and the
    small head's floor does not take the big head's outputs."""
    report = gradcheck.check_model(two_heads(big_bias=1e4), tol=TOL)
    assert report.passed and not report.inconclusive, str(report)
    assert report.atols["small/bias"] < 1e-3 * report.atols["big/bias"]


def test_a_pass_by_a_floor_as_large_as_the_gradient_is_inconclusive():
    """One output, one unit of it at 1e9: every bias's probe is rounded at that scale (floor about 3), while the
    bias gradients are about 1. Before, the floor was compared with the largest gradient anywhere (the kernel's,
    1e3 with inputs of 1e3), so a doubled bias gradient passed; a row that passes only by a floor of at least
    a tenth of its own gradient is now inconclusive, which fails."""
    tinynet.set_seed(0)
    x = Input((8,))
    model = Model(x, _DoubledBiasDense(4, name="wide")(x))
    model.get_layer("wide").weights[1] = np.array([1e9, 0.0, 0.0, 0.0])
    xs = np.random.default_rng(1).standard_normal((2, 8)) * 1e3
    report = gradcheck.check_model(model, xs, tol=TOL, raise_on_failure=False)
    bias = next(row for row in report.rows if row.name == "wide/bias")
    assert report.row_passed(bias) and report.row_inconclusive(bias), str(report)
    assert report.inconclusive and not report.passed and report.max_error > 0.1
    assert "INCONCLUSIVE" in str(report)
    with pytest.raises(gradcheck.GradcheckError, match="INCONCLUSIVE"):
        gradcheck.check_model(model, xs, tol=TOL)


def test_a_zero_gradient_stays_conclusive_and_out_of_max_error():
    """The exactly-zero bias before BatchNormalization is zero to rounding: judged against the largest
    gradient, as before, it passes; its meaningless relative error stays out of max_error."""
    report = gradcheck.check_model(conv_bias_into_batchnorm(), training=True, tol=TOL)
    bias = next(row for row in report.rows if row.name == "conv/bias")
    assert report.gradients["conv/bias"] < 1e-12 * report.gradient_scale
    assert not report.row_inconclusive(bias) and report.max_error < TOL
    assert "yes (zero, noise floor)" in str(report)
