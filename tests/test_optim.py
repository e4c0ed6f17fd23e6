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
    assert run(SGD(learning_rate=0.1), [0.5, -1.0]) == pytest.approx([0.95, 1.05], abs=1e-12)


def test_sgd_momentum():
    # v1 = -0.1·1 = -0.1, w = 0.9;  v2 = 0.9·(-0.1) - 0.1 = -0.19, w = 0.71
    assert run(SGD(learning_rate=0.1, momentum=0.9), [1.0, 1.0]) == pytest.approx([0.9, 0.71], abs=1e-12)


def test_sgd_nesterov():
    # v1 = -0.1, w = 1 + 0.9·(-0.1) - 0.1 = 0.81;  v2 = -0.19, w = 0.81 + 0.9·(-0.19) - 0.1 = 0.539
    trace = run(SGD(learning_rate=0.1, momentum=0.9, nesterov=True), [1.0, 1.0])
    assert trace == pytest.approx([0.81, 0.539], abs=1e-12)


def test_sgd_weight_decay_is_decoupled():
    # w = 2 - lr·wd·w = 2 - 0.1·0.5·2 = 1.9, then the gradient step: 1.9 - 0.1·1 = 1.8
    assert run(SGD(learning_rate=0.1, weight_decay=0.5), [1.0], value=2.0) == pytest.approx([1.8], abs=1e-12)


def test_adam_two_steps():
    # step 1, g = 2: m = 0.2, v = 0.004, alpha = 0.1·sqrt(1-0.999)/(1-0.9) = 0.0316228
    #   w = 1 - alpha·0.2/(sqrt(0.004) + 1e-7) = 0.9000002 (the first Adam step is lr·sign(g))
    # step 2, g = -1: m = 0.2 + 0.1·(-1 - 0.2) = 0.08, v = 0.004 + 0.001·(1 - 0.004) = 0.004996,
    #   alpha = 0.1·sqrt(1 - 0.999²)/(1 - 0.9²) = 0.0235317, w = 0.9000002 - alpha·0.08/0.0706824 = 0.873366
    trace = run(Adam(learning_rate=0.1), [2.0, -1.0])
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
    straight = run(SGD(learning_rate=0.1, momentum=0.9, nesterov=True), grads)
    model, layer = one_weight_model()
    opt = SGD(learning_rate=0.1, momentum=0.9, nesterov=True).attach(model)
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


# ------------------------------------------------------------------------------------------ Keras' per-step schedules
from tinynet.optimizers import schedules  # noqa: E402


def test_per_step_schedules():
    paper = schedules.ExponentialDecay(0.1, decay_steps=8 * 10, decay_rate=0.96, staircase=True)  # 10 steps/epoch
    assert [paper(s) for s in (0, 79, 80, 159, 160)] == pytest.approx([0.1, 0.1, 0.096, 0.096, 0.09216])
    smooth = schedules.ExponentialDecay(1.0, decay_steps=10, decay_rate=0.5)
    assert smooth(5) == pytest.approx(0.5 ** 0.5)
    cos = schedules.CosineDecay(1.0, decay_steps=10, alpha=0.1)
    assert [cos(s) for s in (0, 5, 10, 20)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    warm = schedules.CosineDecay(0.0, decay_steps=10, warmup_target=1.0, warmup_steps=4)
    assert [warm(s) for s in (0, 2, 4, 9, 14, 30)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0], abs=1e-12)
    piece = schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [piece(s) for s in (0, 10, 11, 20, 21)] == [1.0, 1.0, 0.5, 0.5, 0.1]
    for s in (paper, cos, warm, piece):
        rebuilt = schedules.deserialize(json.loads(json.dumps(schedules.serialize(s))))
        assert type(rebuilt) is type(s) and rebuilt(13) == s(13)
    with pytest.raises(ValueError, match="decay_steps must be a finite number > 0"):
        schedules.ExponentialDecay(0.1, 0, 0.9)
    with pytest.raises(ValueError, match="unknown learning rate schedule 'Warp'"):
        schedules.deserialize({"class_name": "Warp", "config": {}})


@pytest.mark.keras
def test_per_step_schedules_match_keras():
    keras = pytest.importorskip("keras")
    cases = [("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=7, decay_rate=0.96, staircase=True)),
             ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=7, decay_rate=0.5)),
             ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=20, alpha=0.2)),
             ("CosineDecay", dict(initial_learning_rate=0.0, decay_steps=20, warmup_target=0.1, warmup_steps=5)),
             ("PiecewiseConstantDecay", dict(boundaries=[5, 12], values=[0.1, 0.05, 0.01]))]
    for name, kwargs in cases:
        ours = getattr(schedules, name)(**kwargs)
        theirs = getattr(keras.optimizers.schedules, name)(**kwargs)
        for step in (0, 1, 5, 6, 12, 13, 24, 40):
            assert ours(step) == pytest.approx(float(theirs(step)), rel=1e-6, abs=1e-8), (name, step)  # float32
        assert ours.get_config().keys() == theirs.get_config().keys()


def test_an_optimizer_evaluates_its_schedule_before_each_step():
    rate = schedules.PiecewiseConstantDecay([1], [0.1, 0.01])  # steps 0 and 1 at 0.1, then 0.01
    trace = run(SGD(learning_rate=rate), [1.0, 1.0, 1.0, 1.0])
    assert trace == pytest.approx([0.9, 0.8, 0.79, 0.78])
    opt = SGD(learning_rate=rate)
    assert opt.learning_rate == 0.1 and opt.learning_rate_schedule is rate
    with pytest.raises(TypeError, match="cannot be set to a number"):
        opt.learning_rate = 0.5
    opt.learning_rate = schedules.ExponentialDecay(1.0, 1, 0.5)  # a schedule may replace a schedule (Keras)
    assert opt.learning_rate == 1.0


def test_state_dict_with_a_schedule_and_the_old_lr_key():
    model, layer = one_weight_model()
    opt = Adam(learning_rate=schedules.ExponentialDecay(0.1, 2, 0.5)).attach(model)
    layer.grads = [np.array([[1.0]])]
    opt.step()
    state = json.loads(json.dumps({"config": opt.get_config(), "iterations": opt.iterations}))
    assert state["config"]["learning_rate"]["class_name"] == "ExponentialDecay"
    fresh = Adam(learning_rate=schedules.ExponentialDecay(1.0, 1, 0.1)).attach(model)
    fresh.load_state_dict({**state, "arrays": opt.state_dict()["arrays"]})
    assert fresh.learning_rate == opt.learning_rate == pytest.approx(0.1 * 0.5 ** 0.5)
    # checkpoints written before the Keras names stored 'lr'
    sgd = SGD(learning_rate=0.1, momentum=0.9).attach(model)
    old = {"config": {"name": "sgd", "lr": 0.05, "weight_decay": 0.0, "momentum": 0.9, "nesterov": False},
           "iterations": 3, "arrays": {"velocity:d/kernel": np.zeros((1, 1))}}
    sgd.load_state_dict(old)
    assert sgd.learning_rate == 0.05 and sgd.iterations == 3
    with pytest.raises(ValueError, match="given twice"):
        sgd.load_state_dict({**old, "config": {**old["config"], "learning_rate": 0.05}})


def test_the_lr_alias_still_works():
    with pytest.warns(DeprecationWarning, match="'lr' is deprecated, use 'learning_rate'"):
        opt = SGD(lr=0.2, momentum=0.5)
    assert opt.lr == opt.learning_rate == 0.2
    assert run(opt, [1.0]) == pytest.approx([0.8])


# ------------------------------------------------------------------------- fused updates (fast paths)
FUSED = {"adam": (lambda: Adam(learning_rate=0.01), "adam_update"),
         "adam, weight decay": (lambda: Adam(learning_rate=0.01, weight_decay=0.1), "adam_update"),
         "sgd momentum": (lambda: SGD(learning_rate=0.05, momentum=0.9), "sgd_momentum_update"),
         "sgd nesterov": (lambda: SGD(learning_rate=0.05, momentum=0.9, nesterov=True), "sgd_momentum_update")}


def _conv_dense_bn_model():
    from tinynet.layers import Conv2D, Flatten
    x = Input((5, 4, 3))
    h = Conv2D(7, (3, 2), name="conv")(x)           # a 4-D kernel of an odd shape
    h = BatchNormalization(name="bn")(h)             # two trainable weights, two moving statistics (not updated)
    return Model(x, Dense(5, name="dense")(Flatten()(h)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", FUSED)
def test_fused_updates_equal_the_optimizers_plain_code(xb, name, dtype, monkeypatch):
    """With fast paths on (the NumPy reference, Numba's one pass, or one CUDA launch on a GPU) the weights and
    the optimizer's state are the same bits as with the plain array code, over three steps with random
    gradients, one of them a transposed view."""
    from tinynet import kernels
    make, kernel = FUSED[name]
    calls = []
    real = getattr(kernels, kernel)
    monkeypatch.setattr(kernels, kernel, lambda *args: calls.append(1) or real(*args))
    results = []
    for fast in (False, True):
        tinynet.set_floatx(dtype)
        tinynet.set_seed(0)
        model = _conv_dense_bn_model().to("gpu" if xb.name == "cupy" else "cpu")
        opt = make().attach(model)
        rng = np.random.default_rng(1)
        with tinynet.fast_paths(fast):
            for _ in range(3):
                for layer in model.layers:
                    grads = [rng.standard_normal(w.shape).astype(dtype) for w in layer.weights]
                    if layer.name == "dense":
                        grads[0] = np.ascontiguousarray(grads[0].T).T  # a view in Fortran order
                    layer.grads = [xb(g) for g in grads]
                opt.step()
        results.append(([xb.numpy(w) for w in model.get_weights()],
                        {k: xb.numpy(v) for k, v in opt.state_dict()["arrays"].items()}))
    (plain_w, plain_state), (fused_w, fused_state) = results
    for a, b in zip(plain_w, fused_w):
        np.testing.assert_array_equal(b, a)
    assert plain_state.keys() == fused_state.keys() and plain_state
    for key in plain_state:
        np.testing.assert_array_equal(fused_state[key], plain_state[key], err_msg=key)
    trainable = len(list(opt.trainable_entries(model)))  # 6: conv, BN's γ and β, dense
    assert trainable == 6 and len(calls) == 3 * trainable  # the kernel ran for every weight, on every backend


@pytest.mark.parametrize("kernel", ["adam_update", "sgd_momentum_update"])
def test_numba_update_kernels_equal_the_reference_on_strided_weights(kernel):
    """A weight that is not C-contiguous (which a reshape would copy) is updated in place all the same."""
    from tinynet import kernels
    if not tinynet.backend.numba_available():
        pytest.skip("needs Numba")
    numba_kernels = kernels.backend_module("numba")
    rng = np.random.default_rng(2)
    args = {"adam_update": (0.9, 0.999, 0.003, 1e-7), "sgd_momentum_update": (0.05, 0.9, True)}[kernel]
    for dtype in (np.float32, np.float64):
        arrays = [rng.standard_normal((6, 8)).astype(dtype) for _ in range(4 if kernel == "adam_update" else 3)]
        arrays[2:] = [np.abs(a) for a in arrays[2:]]  # Adam's v is never negative
        strided = [a.copy()[:, ::2] for a in arrays]        # views into copies: updated in place
        reference = [a[:, ::2].copy() for a in arrays]       # C-contiguous
        getattr(kernels.backend_module("numpy"), kernel)(*reference, *args)
        getattr(numba_kernels, kernel)(*strided, *args)
        for got, want in zip(strided, reference):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layout", ["strided state", "strided gradient"])
@pytest.mark.parametrize("kernel", ["adam_update", "sgd_momentum_update"])
def test_update_kernels_equal_the_reference_on_every_backend_and_layout(xb, kernel, layout):
    """Through the dispatcher, on each backend: a weight and state that are strided views (which Numba updates
    in place and the GPU launcher hands to the reference's array code), or contiguous ones with a transposed
    gradient (which the GPU launcher copies contiguous): the reference's bits, float32 and float64."""
    from tinynet import kernels
    rng = np.random.default_rng(3)
    args = {"adam_update": (0.9, 0.999, 0.003, 1e-7), "sgd_momentum_update": (0.05, 0.9, True)}[kernel]
    for dtype in (np.float32, np.float64):
        arrays = [rng.standard_normal((6, 8)).astype(dtype) for _ in range(4 if kernel == "adam_update" else 3)]
        arrays[3:] = [np.abs(a) for a in arrays[3:]]  # Adam's v is never negative
        reference = [a.copy() for a in arrays]
        if layout == "strided state":
            reference = [a[:, ::2].copy() for a in arrays]
            moved = [xb(a)[:, ::2] for a in arrays]  # views into copies on the backend: updated in place
        else:
            moved = [xb(a) for a in arrays]
            moved[1] = xb(np.ascontiguousarray(arrays[1].T)).T  # the gradient in Fortran order
        getattr(kernels.backend_module("numpy"), kernel)(*reference, *args)
        getattr(kernels, kernel)(*moved, *args)
        for got, want in zip(moved, reference):
            np.testing.assert_array_equal(xb.numpy(got), want)


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("name", FUSED)
def test_a_bad_gradient_changes_nothing(name, fast):
    """A gradient of another shape than its weight (which the fused kernels would read past) or a missing one,
    on the second of two weights: the step raises naming it, and no weight, slot or count has changed."""
    make, _ = FUSED[name]
    tinynet.set_floatx("float64")
    x = Input((2,))
    model = Model(x, Dense(3, name="d")(x))
    layer = model.get_layer("d")
    opt = make().attach(model)
    layer.grads = [np.ones((2, 3)), np.ones(3)]
    opt.step()  # slots exist now
    before = ([w.copy() for w in layer.weights], {k: v.copy() for k, v in opt.state_dict()["arrays"].items()})
    for bad, error, message in [(np.ones(1), ValueError, r"gradient of 'd/bias' has shape \(1,\), the weight \(3,\)"),
                                (np.ones((3, 3)), ValueError, r"'d/bias' has shape \(3, 3\)"),
                                (None, RuntimeError, "no gradient for 'd/bias'"),
                                ([1.0, 1.0, 1.0], TypeError, "the gradient of 'd/bias' is a list, not an array")]:
        layer.grads = [np.ones((2, 3)), bad]
        with tinynet.fast_paths(fast), pytest.raises(error, match=message):
            opt.step()
        assert opt.iterations == 1
        for a, b in zip(before[0], layer.weights):
            np.testing.assert_array_equal(a, b)
        for key, value in opt.state_dict()["arrays"].items():
            np.testing.assert_array_equal(value, before[1][key])


def test_a_loaded_state_must_be_finite_and_adams_v_non_negative():
    """A state with NaN or inf (any slot) or a negative mean of squares (Adam's ``v``) is refused on load, naming
    the array, and the optimizer is left as it was: the next step would have written NaN into the weights."""
    tinynet.set_floatx("float64")
    x = Input((2,))
    model = Model(x, Dense(3, name="d")(x))
    opt = Adam().attach(model)
    model.get_layer("d").grads = [np.ones((2, 3)), np.ones(3)]
    opt.step()
    good = opt.state_dict()
    for slot, value, message in [("m", np.nan, r"'m:d/kernel' holds NaN or infinite values"),
                                 ("v", np.inf, r"'v:d/kernel' holds NaN or infinite values"),
                                 ("v", -1.0, r"'v:d/kernel' holds negative values \(min -1\)")]:
        bad = opt.state_dict()
        bad["arrays"][f"{slot}:d/kernel"][0, 0] = value
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(bad)
        for key, array in opt.state_dict()["arrays"].items():
            np.testing.assert_array_equal(array, good["arrays"][key])
    velocity = SGD(momentum=0.9).attach(model)
    velocity.step()
    bad = velocity.state_dict()
    bad["arrays"]["velocity:d/bias"][1] = -np.inf
    with pytest.raises(ValueError, match=r"'velocity:d/bias' holds NaN or infinite values"):
        velocity.load_state_dict(bad)
    bad["arrays"]["velocity:d/bias"][1] = -1.0  # a negative velocity is an ordinary one
    velocity.load_state_dict(bad)


def test_largest_magnitudes_of_the_optimizer_on_every_backend(xb):
    """The step's bounds read ``max |a|`` of every weight, gradient and state array; on a GPU all of them in one
    copy to the host. Each backend gives the NumPy reference's values: NaN for NaN or ±inf anywhere, 0 for an
    empty array, +0 for −0, float64 and float32 arrays in one list."""
    from tinynet.kernels import numpy_kernels
    from tinynet.optimizers.optimizer import _largest_magnitudes

    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((3, 4, 5)).astype(np.float32), np.array([-5.5, 2.0]), np.zeros(0, np.float32),
              np.array([1.0, np.nan, 3.0]), np.array([np.inf, 1.0], np.float32), np.array([-np.inf]),
              np.array([-0.0, -0.0], np.float32), np.full((2, 3), -7.25, np.float32),
              rng.standard_normal(70_001) * 1e30]
    expected = numpy_kernels.largest_magnitudes(arrays)
    got = _largest_magnitudes([xb(a) for a in arrays])
    assert all(type(m) is float for m in got)
    np.testing.assert_array_equal(got, expected)
    assert got[2] == 0.0 and np.isnan(got[3:6]).all() and not np.signbit(got[6])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_refused_step_changes_nothing_on_every_backend(xb, optimizer):
    """A NaN gradient (checked before the update) and a learning rate that overflows the weights (checked
    after it, from copies) are refused on the GPU as on the CPU, with every weight, state array and the
    step count as they were."""
    from tinynet.optimizers import NonFiniteGradientError, NonFiniteUpdateError

    model = _conv_dense_bn_model().to("gpu" if xb.name == "cupy" else "cpu")
    opt = (SGD(0.1, momentum=0.9) if optimizer == "sgd" else Adam(0.1)).attach(model)
    rng = np.random.default_rng(2)

    def set_gradients(bad=None):
        for layer in model.layers:
            grads = [rng.standard_normal(w.shape).astype(np.float32) for w in layer.weights]
            if bad is not None and layer.name == "dense":
                grads[0][1, 2] = bad
            layer.grads = [xb(g) for g in grads]

    set_gradients()
    opt.step()
    before = ([xb.numpy(w).copy() for w in model.get_weights()],
              {k: xb.numpy(v).copy() for k, v in opt.state_dict()["arrays"].items()})
    set_gradients(bad=np.nan)
    with pytest.raises(NonFiniteGradientError, match="'dense"):
        opt.step()
    set_gradients(bad=3e38)
    opt.learning_rate = 1e38  # finite gradients, an update past float32's largest number
    with pytest.raises(NonFiniteUpdateError):
        opt.step()
    assert opt.iterations == 1
    for a, b in zip(before[0], model.get_weights()):
        np.testing.assert_array_equal(xb.numpy(b), a)
    state = opt.state_dict()["arrays"]
    assert state.keys() == before[1].keys()
    for key, value in before[1].items():
        np.testing.assert_array_equal(xb.numpy(state[key]), value, err_msg=key)


@pytest.mark.gpu
def test_a_gradient_on_another_device_than_its_weight_is_refused():
    from tinynet import backend

    backend.require_gpu()
    model = _conv_dense_bn_model().to("gpu")
    opt = SGD(0.1).attach(model)
    for layer in model.layers:
        layer.grads = [backend.to_device(np.ones(w.shape, np.float32), "gpu") for w in layer.weights]
    model.get_layer("dense").grads[0] = np.ones(model.get_layer("dense").weights[0].shape, np.float32)
    with pytest.raises(TypeError, match="gradient of 'dense.* is on the CPU, the weight on the GPU"):
        opt.step()
    assert opt.iterations == 0


def test_largest_of_groups_on_every_backend(xb):
    """``max |a|`` over each group of arrays of one dtype (one wait for the device on a GPU): NaN where any holds NaN
    or ±inf, 0 for a group of empty arrays or none."""
    from tinynet.optimizers.optimizer import _largest_of_groups

    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(1001).astype(np.float32) * 9
    groups = [[a, b, np.zeros((0, 3), np.float32)], [np.zeros(0, np.float32)], [],
              [a, np.array([1.0, -np.inf], np.float32)], [np.array([np.nan]), np.array([2.0])],
              [np.array([-0.0, -0.0])], [b.T.astype(np.float64)[::3]]]
    got = _largest_of_groups([[xb(x) for x in group] for group in groups])
    assert all(type(m) is float for m in got)
    expected = [max(np.abs(a).max(), np.abs(b).max()), 0.0, 0.0, np.nan, np.nan, 0.0, np.abs(b[::3]).max()]
    np.testing.assert_array_equal(got, expected)
    assert not np.signbit(got[5])


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam", "adam_decay"])
def test_the_all_at_once_proof_gives_the_per_weight_steps(monkeypatch, optimizer):
    """On a GPU a step first bounds every update by the maxima over all weights (one wait for the device). Forced
    here on the CPU, the weights, the state, the step count and the errors are those of the per-weight checks:
    over good steps (a float64 gradient of a float32 weight among them), a NaN gradient and a learning rate
    that overflows."""
    from tinynet.optimizers import NonFiniteGradientError, NonFiniteUpdateError
    from tinynet.optimizers import optimizer as optimizer_module

    make = {"sgd": lambda: SGD(0.05, momentum=0.9), "nesterov": lambda: SGD(0.05, momentum=0.9, nesterov=True),
            "adam": lambda: Adam(0.01), "adam_decay": lambda: Adam(0.01, weight_decay=0.1)}[optimizer]
    real, proofs = optimizer_module._largest_of_groups, []
    monkeypatch.setattr(optimizer_module, "_largest_of_groups", lambda groups: proofs.append(1) or real(groups))
    runs = []
    for all_at_once in (False, True):
        monkeypatch.setattr(optimizer_module, "_proves_all_at_once", lambda w, _on=all_at_once: _on)
        tinynet.set_seed(0)
        model = _conv_dense_bn_model()
        opt = make().attach(model)
        rng = np.random.default_rng(7)
        errors = []
        for step in range(6):
            for layer in model.layers:
                grads = [rng.standard_normal(w.shape).astype(np.float32) for w in layer.weights]
                if layer.name == "conv" and grads:
                    grads[0] = grads[0].astype(np.float64)  # cast to the weight's float32 by the step
                if layer.name == "dense" and step == 3:
                    grads[1][2] = np.nan
                layer.grads = grads
            opt.learning_rate = 1e38 if step == 4 else (0.05 if optimizer != "adam" else 0.01)
            try:
                opt.step()
            except (NonFiniteGradientError, NonFiniteUpdateError) as e:
                errors.append((type(e).__name__, str(e)))
        runs.append(([w.copy() for w in model.get_weights()], opt.state_dict()["arrays"], opt.iterations, errors))
    (w0, s0, n0, e0), (w1, s1, n1, e1) = runs
    # (Adam's step is about the learning rate times ±1, so 1e38 stays finite in float32: one error only)
    expected = ["NonFiniteGradientError"] + (["NonFiniteUpdateError"] if optimizer in ("sgd", "nesterov") else [])
    assert e0 == e1 and [name for name, _ in e0] == expected and n0 == n1 == 6 - len(expected)
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(b, a)
    assert s0.keys() == s1.keys()
    for key in s0:
        np.testing.assert_array_equal(s1[key], s0[key], err_msg=key)
    assert len(proofs) == 6  # every step of the second run tried the proof first (the first run never did)
