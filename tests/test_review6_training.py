"""Review 6 of the training-safety code: the optimizers' update bounds, the largest-magnitudes kernel."""
import math

import numpy as np
import pytest

import tinynet
from tinynet import optimizers
from tinynet.kernels import numpy_kernels


def _linear_with_grads(dtype, grad_value):
    tinynet.set_seed(0)
    with tinynet.floatx_scope(dtype):
        m = tinynet.Sequential([tinynet.Input((4,)), tinynet.Dense(2)])
    for layer in m.layers:
        layer.grads = [np.full_like(w, grad_value) for w in layer.weights]
    return m


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dtype, lr", [("float32", 1e37), ("float64", 1e306)])
def test_adam_refuses_a_step_size_beyond_the_dtype(dtype, lr, fast, kernels):
    # beta_1 near 1 makes Adam's first step size α = η √(1 − β_2) / (1 − β_1) ≈ 7000 η, infinite in the dtype;
    # m' = 0 (zero gradients) made the old bound α·|m'|/ε = 0 "prove" the step, and 0 · inf wrote NaN
    if kernels == "numba" and not tinynet.backend.numba_available():
        pytest.skip("Numba is not installed")
    with tinynet.backend.fast_paths(fast), tinynet.backend.cpu_kernels(kernels):
        m = _linear_with_grads(dtype, 0.0)
        opt = optimizers.Adam(learning_rate=lr, beta_1=0.9999, beta_2=0.5).attach(m)
        before = m.get_weights()
        with np.errstate(all="ignore"), pytest.raises(optimizers.NonFiniteUpdateError):
            opt.step()
        assert opt.iterations == 0 and opt.slots == {"m": {}, "v": {}}
        for a, b in zip(before, m.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_a_nan_bound_does_not_prove_a_step(monkeypatch):
    # max() skips a NaN that is not first: a bound that is NaN (0 · inf) must fail the proof, not pass it
    class Odd(optimizers.SGD):
        def _update_bounds(self, w_max, g_max, slot_max, lr, dtype):
            return [0.0, math.nan]

    m = _linear_with_grads("float32", 0.0)
    opt = Odd(learning_rate=0.1).attach(m)
    copies = []
    original = optimizers.Optimizer._checked_step

    def spy(self, prepared, lr):
        copies.append(len(prepared))
        return original(self, prepared, lr)

    monkeypatch.setattr(optimizers.Optimizer, "_checked_step", spy)
    opt.step()
    assert copies and opt.iterations == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_largest_magnitude_of_negative_zeros_is_positive_zero(dtype):
    a = np.array([-0.0, -0.0], dtype)
    strided = np.zeros((3, 4), dtype)[:, ::2] * -1.0  # non-contiguous: the Numba module falls back on NumPy's
    for found in (numpy_kernels.largest_magnitudes([a, strided]), tinynet.kernels.largest_magnitudes([a, strided])):
        assert [math.copysign(1.0, v) for v in found] == [1.0, 1.0]


def test_a_step_refused_for_its_learning_rate_puts_the_rate_back():
    # Engine.train_batch(lr=...) sets the rate before the step; the optimizer refused 1e39 (beyond float32) but
    # the optimizer kept 1e39 as its rate (and the engine as its last rate)
    tinynet.set_seed(0)
    m = tinynet.Sequential([tinynet.Input((4,)), tinynet.Dense(2)])
    m.compile(optimizers.SGD(learning_rate=0.1), "mse")
    engine = m._training
    x, y = np.ones((3, 4), np.float32), np.ones((3, 2), np.float32)
    engine.train_batch([x], [y], lr=0.05)
    before = m.get_weights()
    with pytest.raises(ValueError, match="learning rate"):
        engine.train_batch([x], [y], lr=1e39)
    assert m.optimizer.learning_rate == 0.05 and engine.last_lr == 0.05 and m.optimizer.iterations == 1
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


class _Constant(optimizers.schedules.LearningRateSchedule):
    def __init__(self, value):
        self.value = value

    def __call__(self, step):
        return self.value

    def get_config(self):
        return {"value": self.value}


@pytest.mark.parametrize("rate", [-1e38, -1.0])
@pytest.mark.parametrize("make", [lambda s: optimizers.SGD(learning_rate=s),
                                  lambda s: optimizers.SGD(learning_rate=s, momentum=0.9, nesterov=True),
                                  lambda s: optimizers.Adam(learning_rate=s)])
def test_a_negative_or_nan_scheduled_rate_is_refused_before_any_change(make, rate):
    # a schedule's value is not checked like a number given as learning_rate; the bounds took η·max|g| < 0 as
    # proof, and SGD at -1e38 wrote inf into the weights, silently
    m = _linear_with_grads("float32", 10.0)
    opt = make(_Constant(rate)).attach(m)
    before = m.get_weights()
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="learning rate"):
        opt.step()
    assert opt.iterations == 0
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_negative_weight_decay_set_later_is_refused():
    m = _linear_with_grads("float32", 0.0)
    opt = optimizers.SGD(learning_rate=1.0).attach(m)
    opt.weight_decay = -1e38  # w - (-1e38) w overflows; the bound w(1 + ηλ) was negative
    before = m.get_weights()
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="weight_decay"):
        opt.step()
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("callbacks", [tinynet.callbacks.History(), 5, [5]])
def test_evaluate_names_bad_callbacks_as_fit_does(callbacks):
    # a single callback (not in a list) gave "TypeError: 'History' object is not iterable"
    tinynet.set_seed(0)
    m = tinynet.Sequential([tinynet.Input((4,)), tinynet.Dense(2)])
    m.compile("sgd", "mse")
    x, y = np.ones((3, 4), np.float32), np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="evaluate: callbacks must be"):
        m.evaluate(x, y, verbose=0, callbacks=callbacks)


def test_a_state_of_the_wrong_shape_is_refused_before_any_weight_changes():
    # a state loaded before attach is not checked against the model; the step then raised in the kernel of the
    # last weight, after updating the first ones and counting the step
    tinynet.set_seed(0)
    m = tinynet.Sequential([tinynet.Input((4,)), tinynet.Dense(3), tinynet.Dense(2)])
    for layer in m.layers:
        layer.grads = [np.full_like(w, 0.1) for w in layer.weights]
    arrays = {f"{slot}:{layer.name}/{name}": np.zeros_like(w)
              for layer in m.layers for name, w in zip(layer.weight_names, layer.weights) for slot in ("m", "v")}
    arrays[f"m:{m.layers[-1].name}/kernel"] = np.zeros((1,), np.float32)
    opt = optimizers.Adam()
    opt.load_state_dict({"config": opt.get_config(), "iterations": 3, "arrays": arrays})
    before = m.get_weights()
    with pytest.raises(ValueError, match="shape"):
        opt.attach(m)
        opt.step()
    assert opt.iterations == 3 and opt.model is None
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
