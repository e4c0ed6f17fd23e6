"""Optimizers and schedules against steps worked out by hand."""
import json

import numpy as np
import pytest

import tinynet
from tinynet import Model
from tinynet.layers import BatchNormalization, Dense, Input
from tinynet.optim import SGD, Adam, Constant, CosineDecay, StepDecay, get_optimizer, get_schedule


def one_weight_model(value=1.0, dtype="float64"):
    """Dense(1) on one feature, no bias: a single weight ``w``."""
    tinynet.set_floatx(dtype)
    x = Input((1,))
    model = Model(x, Dense(1, use_bias=False, name="d")(x))
    layer = model.get_layer("d")
    layer.set_weights([np.array([[value]])])
    return model, layer


def run(opt, grads, value=1.0):
    """Apply ``opt`` once per gradient in ``grads`` to a single weight starting at ``value``; return its trace."""
    model, layer = one_weight_model(value)
    opt.attach(model)
    trace = []
    for g in grads:
        layer.grads = [np.array([[g]])]
        opt.step()
        trace.append(float(layer.weights[0][0, 0]))
    return trace


def test_sgd_plain():
    # w = 1 - 0.1 * 0.5 = 0.95, then 0.95 - 0.1 * (-1) = 1.05
    assert run(SGD(lr=0.1), [0.5, -1.0]) == pytest.approx([0.95, 1.05], abs=1e-12)


def test_sgd_momentum():
    # v1 = -0.1·1 = -0.1, w = 0.9;  v2 = 0.9·(-0.1) - 0.1 = -0.19, w = 0.71
    assert run(SGD(lr=0.1, momentum=0.9), [1.0, 1.0]) == pytest.approx([0.9, 0.71], abs=1e-12)


def test_sgd_nesterov():
    # v1 = -0.1, w = 1 + 0.9·(-0.1) - 0.1 = 0.81;  v2 = -0.19, w = 0.81 + 0.9·(-0.19) - 0.1 = 0.539
    assert run(SGD(lr=0.1, momentum=0.9, nesterov=True), [1.0, 1.0]) == pytest.approx([0.81, 0.539], abs=1e-12)


def test_sgd_weight_decay_is_decoupled():
    # w = 2 - lr·wd·w = 2 - 0.1·0.5·2 = 1.9, then the gradient step: 1.9 - 0.1·1 = 1.8
    assert run(SGD(lr=0.1, weight_decay=0.5), [1.0], value=2.0) == pytest.approx([1.8], abs=1e-12)


def test_adam_two_steps():
    # step 1, g = 2: m = 0.2, v = 0.004, alpha = 0.1·sqrt(1-0.999)/(1-0.9) = 0.0316228
    #   w = 1 - alpha·0.2/(sqrt(0.004) + 1e-7) = 0.9000002 (the first Adam step is lr·sign(g))
    # step 2, g = -1: m = 0.2 + 0.1·(-1 - 0.2) = 0.08, v = 0.004 + 0.001·(1 - 0.004) = 0.004996,
    #   alpha = 0.1·sqrt(1 - 0.999²)/(1 - 0.9²) = 0.0235317, w = 0.9000002 - alpha·0.08/0.0706824 = 0.873366
    trace = run(Adam(lr=0.1), [2.0, -1.0])
    assert trace[0] == pytest.approx(1 - 0.0316228 * 0.2 / (0.0632456 + 1e-7), abs=1e-6)
    assert trace[1] == pytest.approx(0.873366, abs=1e-6)


def test_trainable_only_and_dtype_kept():
    tinynet.set_floatx("float32")
    x = Input((4,))
    model = Model(x, BatchNormalization(name="bn")(Dense(3, name="d")(x)))
    bn = model.get_layer("bn")
    model.forward(np.random.default_rng(0).normal(size=(8, 4)))
    model.backward(np.ones((8, 3), np.float32))
    moving = [w.copy() for w in bn.weights[2:]]
    before = model.get_layer("d").get_weights()
    opt = Adam(0.01).attach(model)
    opt.step()
    assert all(np.array_equal(a, b) for a, b in zip(moving, bn.weights[2:]))  # moving stats untouched
    assert not np.array_equal(before[0], model.get_layer("d").weights[0])
    assert all(w.dtype == np.float32 for w in model.weights)
    assert all(v.dtype == np.float32 for slot in opt.slots.values() for v in slot.values())
    assert "bn/moving_mean" not in opt.slots["m"]


def test_state_dict_round_trip_continues_identically():
    grads = [1.0, -0.5, 0.25, 2.0]
    straight = run(SGD(lr=0.1, momentum=0.9, nesterov=True), grads)
    model, layer = one_weight_model()
    opt = SGD(lr=0.1, momentum=0.9, nesterov=True).attach(model)
    for g in grads[:2]:
        layer.grads = [np.array([[g]])]
        opt.step()
    state = opt.state_dict()
    json.dumps({"config": state["config"], "iterations": state["iterations"]})  # JSON-able scalars
    assert all(isinstance(a, np.ndarray) for a in state["arrays"].values())
    fresh = get_optimizer(state["config"]).attach(model)
    fresh.load_state_dict(state)
    assert fresh.iterations == 2
    for g in grads[2:]:
        layer.grads = [np.array([[g]])]
        fresh.step()
    assert float(layer.weights[0][0, 0]) == straight[-1]


def test_state_moves_with_model_to():
    model, layer = one_weight_model()
    opt = Adam().attach(model)
    assert opt in model.device_listeners
    layer.grads = [np.array([[1.0]])]
    opt.step()
    model.to("cpu")
    assert all(isinstance(v, np.ndarray) for slot in opt.slots.values() for v in slot.values())


@pytest.mark.gpu
def test_state_moves_to_gpu():
    model, layer = one_weight_model()
    opt = SGD(0.1, momentum=0.9).attach(model)
    layer.grads = [np.array([[1.0]])]
    opt.step()
    model.to("gpu")
    import cupy

    assert isinstance(opt.slots["velocity"]["d/kernel"], cupy.ndarray)
    layer.grads = [cupy.asarray([[1.0]])]
    opt.step()
    assert float(layer.weights[0][0, 0]) == pytest.approx(0.71)


def test_missing_gradient_is_an_error():
    model, layer = one_weight_model()
    with pytest.raises(RuntimeError, match="d/kernel"):
        SGD().attach(model).step()


def test_schedules():
    step = StepDecay(0.1)  # the paper: ×0.96 every 8 epochs
    assert step(0) == 0.1 and step(7.99) == 0.1
    assert step(8) == pytest.approx(0.096) and step(16) == pytest.approx(0.09216)
    cos = CosineDecay(1.0, epochs=10, min_lr=0.0)
    assert [cos(e) for e in (0, 5, 10, 12)] == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-12)
    assert cos(2.5) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))
    assert Constant(0.3)(100) == 0.3
    for s in (step, cos, Constant(0.3)):
        rebuilt = get_schedule(json.loads(json.dumps(s.get_config())))
        assert rebuilt(9.5) == s(9.5)
    with pytest.raises(ValueError):
        get_schedule({"name": "nope"})
