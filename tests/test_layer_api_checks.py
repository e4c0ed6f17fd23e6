"""Layer and model calls a reviewer broke: dtypes, the ``training`` flag, names, empty graphs, the gradient
checker's own limits.

* a layer casts real inputs of the other float type to its own dtype (as Keras casts to the compute dtype):
  float32 layers fed float64 return float32 at any batch size, and a float64 layer fed float32 computes in
  float64 on every path (Winograd's transforms included);
* ``training`` is True, False or None (read as False); a string is refused instead of running Dropout and
  updating BatchNormalization's statistics;
* names without control characters, models with at least one input and one output, a Sequential emptied by
  ``pop`` is not built, ``build`` takes a shape, ``set_weights`` of a ragged list names the layer;
* the gradient checker refuses to pass when its noise floor hides whole gradients (a too small ``eps``), and
  checks its inputs (dict by name, complex, count, a model without an input).
"""
import numpy as np
import pytest

import tinynet
from tinynet import Model, Sequential, gradcheck
from tinynet.layers import (BatchNormalization, Conv2D, Dense, Dropout, GlobalAveragePooling2D, Input)
from tinynet.layers import conv_winograd


def test_a_float32_layer_fed_float64_computes_and_returns_float32():
    x = Input((4, 4, 2), dtype="float64")
    model = Model(x, Dense(3)(GlobalAveragePooling2D()(x)))
    assert model.outputs[0].dtype == "float32"
    data = np.random.default_rng(0).standard_normal((2, 4, 4, 2))
    for batch in (data, data[:0], data[:1]):
        assert model.predict(batch).dtype == np.float32
    expected = data.mean(axis=(1, 2)).astype(np.float32) @ model.layers[-1].weights[0]
    np.testing.assert_allclose(model.predict(data), expected + model.layers[-1].weights[1], rtol=1e-6)


@pytest.mark.parametrize("winograd", [True, False])
def test_a_float64_convolution_fed_float32_keeps_float64_precision(monkeypatch, winograd):
    """Eager calls of a float64 Conv2D on a float32 batch equal the float64 batch's to 1e-13 (before, the
    Winograd path transformed the tiles in float32: 1e-6)."""
    monkeypatch.setattr(conv_winograd, "MIN_TILES", 1)
    monkeypatch.setattr(conv_winograd, "MIN_WORK", 1)
    conv = Conv2D(6, 3, padding="same", dtype="float64")
    x32 = np.random.default_rng(1).standard_normal((2, 9, 9, 5)).astype(np.float32)
    with tinynet.winograd(winograd):
        y = conv(x32)
        expected = conv(x32.astype(np.float64))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("flag", ["False", "no", 0, 1.0, [True]])
def test_training_must_be_a_bool_or_none(flag):
    x = Input((3,))
    model = Model(x, BatchNormalization(name="bn")(Dense(3, name="d")(x)))
    data = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    before = [w.copy() for w in model.get_weights()]
    for call in (lambda: model(data, training=flag), lambda: model.forward(data, training=flag),
                 lambda: model.run(data, training=flag)):
        with pytest.raises(TypeError, match=r"model 'model': training must be True, False or None, got"):
            call()
    with pytest.raises(TypeError, match=r"layer 'drop' \(Dropout\): training must be True, False or None"):
        Dropout(0.5, name="drop")(data, training=flag)
    for a, b in zip(model.get_weights(), before):  # BatchNormalization's moving statistics untouched
        np.testing.assert_array_equal(a, b)


def test_training_none_is_inference():
    x = Input((3,))
    model = Model(x, Dropout(0.9)(x))
    data = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(model(data, training=None), data)
    np.testing.assert_array_equal(Dropout(0.9)(data, training=None), data)


@pytest.mark.parametrize("name", [None, 3, "", "a/b", "x\x00y", "tab\tname", "del\x7f"])
def test_model_names_are_checked(name):
    x = Input((3,))
    y = Dense(2)(x)
    with pytest.raises(ValueError, match="Model: name must be a non-empty string"):
        Model(x, y, name=name)
    with pytest.raises(ValueError, match="Sequential: name must be a non-empty string"):
        Sequential(name=name)


def test_a_model_needs_an_input_and_an_output():
    x = Input((3,))
    with pytest.raises(ValueError, match=r"Model 'model': outputs is empty"):
        Model(x, [])
    with pytest.raises(ValueError, match=r"Model 'model': inputs is empty"):
        Model([], Dense(2)(x))


def test_a_sequential_emptied_by_pop_is_not_built():
    model = Sequential([Input((3,)), Dense(2)])
    model.pop()
    assert not model.built
    with pytest.raises(ValueError, match="has an input but no layers: add a layer"):
        model.predict(np.ones((2, 3)))
    model.add(Dense(4))
    assert model.built and model.predict(np.ones((2, 3))).shape == (2, 4)


def test_sequential_build_takes_a_shape():
    with pytest.raises(TypeError, match=r"Sequential 'sequential': build takes an input shape, a tuple"):
        Sequential([Dense(2)]).build(3)


def test_set_weights_of_a_ragged_list_names_the_layer():
    x = Input((2,))
    model = Model(x, Dense(2, name="d")(x))
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"layer 'd': weight 'kernel' is not an array of shape \(2, 2\)"):
        model.set_weights([[[1, 2], [3]], np.zeros(2)])
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


class _DoubledDense(Dense):
    """A Dense whose backward is wrong by a factor 2."""

    def _backward(self, grad, cache, input_grad=True):
        gx, grads = super()._backward(grad, cache, input_grad)
        return (None if gx is None else 2 * gx), [2 * g for g in grads]


def test_gradcheck_cannot_pass_when_its_noise_floor_hides_the_gradients():
    with pytest.raises(gradcheck.GradcheckError, match="INCONCLUSIVE"):
        gradcheck.check_layer(_DoubledDense(3), (2, 4), eps=1e-20)
    report = gradcheck.check_layer(Dense(3), (2, 4), eps=1e-20, raise_on_failure=False)
    assert report.inconclusive and not report.passed
    with pytest.raises(gradcheck.GradcheckError, match="FAIL"):  # a sensible eps finds the factor 2
        gradcheck.check_layer(_DoubledDense(3), (2, 4))
    good = gradcheck.check_layer(Dense(3), (2, 4))
    assert good.passed and not good.inconclusive and good.gradient_scale > 0


def test_gradcheck_checks_its_inputs():
    x = Input((3,), name="features")
    model = Model(x, Dense(2)(x))
    data = np.random.default_rng(3).standard_normal((2, 3))
    assert gradcheck.check_model(model, {"features": data}).passed
    with pytest.raises(ValueError, match=r"missing \['features'\], unknown \['other'\]"):
        gradcheck.check_model(model, {"other": data})
    with pytest.raises(TypeError, match="input 0 has dtype complex128"):
        gradcheck.check_model(model, data + 1j)
    with pytest.raises(ValueError, match="got 2 input arrays for 1 model inputs"):
        gradcheck.check_model(model, [data, data])
    with pytest.raises(ValueError, match="the model has no input yet"):
        gradcheck.check_model(Sequential([Dense(2)]))
