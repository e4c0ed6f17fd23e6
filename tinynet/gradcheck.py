"""Gradient checking by central differences, in float64, with a random upstream gradient.

The checked scalar is ``f = Σ_k Σ u_k · y_k`` over the model's outputs ``y_k`` with fixed random ``u_k``
(never all ones, which would hide transposition bugs). For every input and every trainable weight ``θ``
the analytic ``∂f/∂θ`` from ``backward`` is compared with

* per element, for tensors up to ``max_elements`` values: ``(f(θ + εe_i) − f(θ − εe_i)) / 2ε``;
* along ``directions`` random unit directions d for larger ones: ``(f(θ + εd) − f(θ − εd)) / 2ε`` vs ``⟨∂f/∂θ, d⟩``.

The error of a tensor is ``max |numeric − analytic| / max(max |numeric|, max |analytic|)`` (per element)
or the largest error over the directions, ``|numeric − ⟨∂f/∂θ, d⟩|`` relative to the larger of the two
values and ``‖∂f/∂θ‖ / √n`` (the typical size of a projection on a random unit direction, so that a
direction nearly orthogonal to the gradient cannot turn rounding noise into a failure).

A tensor passes when its relative error is below ``tol``, or when its absolute error
``max |numeric − analytic|`` is below ``atol``: by default the finite-difference noise floor
``atol = 16 · ε_mach · Σ_k Σ |u_k · y_k| / ε``, a bound on what rounding alone does to a central
difference of ``f`` (the error measured on small models is about ``0.5 · ε_mach · Σ |u · y| / ε``).
Without it a gradient that is exactly zero (a bias feeding BatchNormalization in training mode, say)
would always show a relative error of 1, since its numeric estimate is pure rounding noise.

The check runs on the model's device (``model.to('gpu')`` first to check the CuPy kernels); the
perturbations and the comparison are made on the CPU. Weights are cast to float64 during the check and
restored afterwards, as are BatchNormalization statistics and Dropout generators.

Examples
--------
>>> from tinynet import gradcheck
>>> from tinynet.layers import Conv2D
>>> gradcheck.check_layer(Conv2D(4, 3, strides=2, padding='same'), input_shape=(2, 7, 9, 3))
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import backend
from .layers.base import SymbolicTensor
from .layers.core import Input
from .model import Model


class GradcheckError(AssertionError):
    """A gradient disagrees with its finite-difference estimate; the message holds the report."""


class GradcheckRow(NamedTuple):
    """The check of one tensor (an input or a trainable weight)."""

    name: str          #: ``'input <input name>'`` or ``'<layer name>/<weight name>'``
    shape: tuple
    method: str        #: ``'elements'`` (every element) or ``'<k> dirs'`` (k random directions)
    rel_error: float   #: max relative error (see the module docstring)
    abs_error: float   #: ``max |numeric − analytic|``


@dataclass
class GradcheckReport:
    """Result of a check.

    ``rows`` holds one :class:`GradcheckRow` per tensor: ``(name, shape, method, rel_error, abs_error)``.
    A row passes when its relative error is below ``tol`` or its absolute error below ``atol`` (the
    finite-difference noise floor, see the module docstring).
    """

    rows: list = field(default_factory=list)
    tol: float = 1e-7
    atol: float = 0.0
    device: str = "cpu"

    def row_passed(self, row) -> bool:
        return row.rel_error < self.tol or row.abs_error < self.atol

    def _at_noise_floor(self, row) -> bool:
        """The row passes only because its absolute error is below the noise floor."""
        return row.rel_error >= self.tol and row.abs_error < self.atol

    @property
    def max_error(self) -> float:
        """The largest relative error, leaving out rows that pass only by the noise floor."""
        return max((r.rel_error for r in self.rows if not self._at_noise_floor(r)), default=0.0)

    @property
    def passed(self) -> bool:
        return all(self.row_passed(r) for r in self.rows)

    def __str__(self):
        lines = [f"{'tensor':<40} {'shape':<20} {'method':<12} {'max rel err':>12} {'max abs err':>12}  ok"]
        for row in self.rows:
            ok = ("yes (noise floor)" if self._at_noise_floor(row) else "yes") if self.row_passed(row) else "NO"
            lines.append(f"{row.name:<40} {str(row.shape):<20} {row.method:<12} {row.rel_error:>12.3e} "
                         f"{row.abs_error:>12.3e}  {ok}")
        lines.append(f"max relative error {self.max_error:.3e} (tolerance {self.tol:g}, noise floor "
                     f"{self.atol:.1e}, on {self.device}): {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the steps
class _Target(NamedTuple):
    """A tensor to check: read and write its value (NumPy float64, on the CPU) and its analytic gradient."""

    name: str
    get: Callable
    set: Callable
    analytic: np.ndarray


def _float64_inputs(inputs, model, rng):
    """The check's inputs as float64 NumPy arrays (a list, one per model input); default: standard normal,
    batch 2."""
    if inputs is None:
        return [rng.standard_normal((2,) + t.example_shape) for t in model.inputs]
    return [np.array(backend.to_numpy(a), dtype=np.float64)
            for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]


class _Float64Model:
    """The model for the duration of a check: float64 inputs and weights on the model's device, random
    generators (Dropout) replayed before every call so each walk sees the same masks.

    :meth:`restore` puts back the weights (gradients cleared), the Inputs' dtypes and the generators, and
    drops the model's tape.
    """

    def __init__(self, model, training):
        self.model, self.training, self.device = model, training, model.device
        self._saved_weights = [list(layer.weights) for layer in model.layers]
        self._saved_rngs = {id(layer): copy.deepcopy(layer.rng.bit_generator.state)
                            for layer in model.layers if hasattr(layer, "rng")}
        self._saved_dtypes = [t.dtype for t in model.inputs]
        for t in model.inputs:
            t.dtype = "float64"
        for layer in model.layers:
            layer.weights = [backend.to_device(np.array(backend.to_numpy(w), dtype=np.float64), self.device)
                             for w in layer.weights]

    def _replay_rngs(self):
        for layer in self.model.layers:
            if id(layer) in self._saved_rngs:
                layer.rng.bit_generator.state = copy.deepcopy(self._saved_rngs[id(layer)])

    def _on_device(self, arrays):
        moved = [backend.to_device(a, self.device) for a in arrays]
        return moved if len(moved) > 1 else moved[0]

    def outputs(self, xs):
        """The outputs (NumPy, a list) for the inputs ``xs``, without a tape."""
        self._replay_rngs()
        return [backend.to_numpy(o) for o in self.model.run(self._on_device(xs), training=self.training)]

    def gradients(self, xs, upstream):
        """``forward`` then ``backward`` with the upstream gradients: the input gradients (a list); the
        parameter gradients are left in each ``layer.grads``."""
        self._replay_rngs()
        self.model.forward(self._on_device(xs), training=self.training)
        gx = self.model.backward(self._on_device(upstream))
        return gx if isinstance(gx, list) else [gx]

    def targets(self, xs, input_grads):
        """Every input (its value lives in ``xs``, changed in place) then every trainable weight, in layer
        order, with the analytic gradients of the last :meth:`gradients`."""
        device = self.device
        targets = [_Target(f"input {t.name}", lambda i=i: xs[i], lambda v, i=i: xs.__setitem__(i, v), g)
                   for i, (t, g) in enumerate(zip(self.model.inputs, input_grads))]
        for layer in self.model.layers:
            grads = list(layer.grads)
            for j, (wname, trainable) in enumerate(zip(layer.weight_names, layer.trainable_flags)):
                if trainable:
                    targets.append(_Target(
                        f"{layer.name}/{wname}", lambda L=layer, j=j: backend.to_numpy(L.weights[j]),
                        lambda v, L=layer, j=j: L.weights.__setitem__(j, backend.to_device(v, device)), grads[j]))
        return targets

    def restore(self):
        model = self.model
        for layer, weights in zip(model.layers, self._saved_weights):
            layer.weights = weights
            layer.grads = [None] * len(weights)
        for t, dtype in zip(model.inputs, self._saved_dtypes):
            t.dtype = dtype
        for layer in model.layers:
            if id(layer) in self._saved_rngs:
                layer.rng.bit_generator.state = self._saved_rngs[id(layer)]
        model.clear_tape()


def _noise_floor(upstream, outputs, eps):
    """``16 · ε_mach · Σ_k Σ |u_k · y_k| / eps``: what rounding alone can do to a central difference of f."""
    f_scale = float(sum(np.sum(np.abs(u * o)) for u, o in zip(upstream, outputs)))
    return 16 * np.finfo(np.float64).eps * f_scale / eps


def _per_element(f, target, base, analytic, eps):
    """Central differences element by element; return ``(relative error, absolute error)``."""
    numeric = np.empty_like(base)
    flat = numeric.reshape(-1)
    for k in range(base.size):
        values = []
        for sign in (1, -1):
            probe = base.copy()
            probe.reshape(-1)[k] += sign * eps
            target.set(probe)
            values.append(f())
        flat[k] = (values[0] - values[1]) / (2 * eps)
    abs_err = float(np.abs(numeric - analytic).max())
    scale = max(np.abs(numeric).max(), np.abs(analytic).max(), 1e-300)
    return abs_err / scale, abs_err


def _along_directions(f, target, base, analytic, eps, directions, rng):
    """Central differences along random unit directions, each compared with ``⟨∂f/∂θ, d⟩``; return the
    largest ``(relative error, absolute error)`` over the directions."""
    err = abs_err = 0.0
    typical = float(np.linalg.norm(analytic)) / np.sqrt(base.size)
    for _ in range(directions):
        d = rng.standard_normal(base.shape)
        d /= np.linalg.norm(d)
        target.set(base + eps * d)
        plus = f()
        target.set(base - eps * d)
        minus = f()
        numeric = (plus - minus) / (2 * eps)
        exact = float(np.sum(analytic * d))
        abs_err = max(abs_err, abs(numeric - exact))
        err = max(err, abs(numeric - exact) / max(abs(numeric), abs(exact), typical, 1e-300))
    return err, abs_err


def _check_target(f, target, eps, max_elements, directions, rng):
    """Compare one tensor's analytic gradient with central differences of ``f``; leave its value as it was."""
    base = np.array(target.get(), dtype=np.float64)
    analytic = np.asarray(backend.to_numpy(target.analytic), dtype=np.float64)
    if base.size <= max_elements:
        err, abs_err = _per_element(f, target, base, analytic, eps)
        method = "elements"
    else:
        err, abs_err = _along_directions(f, target, base, analytic, eps, directions, rng)
        method = f"{directions} dirs"
    target.set(base)
    return GradcheckRow(target.name, tuple(base.shape), method, err, abs_err)


# ------------------------------------------------------------------------------------------ public checks
def check_model(model, inputs=None, training=False, seed=0, eps=1e-6, tol=1e-7, atol=None, max_elements=400,
                directions=12, raise_on_failure=True):
    """Check ``model.backward`` against central differences for the inputs and every trainable weight.

    Parameters
    ----------
    model : Model
    inputs : array or list of arrays, optional
        Default: standard normal arrays of batch 2 for each input.
    training : bool
        Run layers in training mode (BatchNormalization on batch statistics; Dropout with a fixed mask).
    seed : int
        Seeds the inputs, the upstream gradients and the directions.
    eps, tol, max_elements, directions : see the module docstring.
    atol : float, optional
        Absolute error under which a tensor passes whatever its relative error; default: the noise floor
        ``16 · ε_mach · Σ |u · y| / eps`` (see the module docstring). Pass 0 to judge by ``tol`` alone.
    raise_on_failure : bool
        Raise :class:`GradcheckError` with the report when a tensor fails both ``tol`` and ``atol``.

    Returns
    -------
    GradcheckReport
        One :class:`GradcheckRow` per input, then per trainable weight in layer order. The model's weights,
        gradients (cleared), Input dtypes, random generators and tape are as before the call.
    """
    rng = np.random.default_rng(seed)
    xs = _float64_inputs(inputs, model, rng)
    checked = _Float64Model(model, training)
    try:
        outs = checked.outputs(xs)
        upstream = [rng.standard_normal(o.shape) for o in outs]
        if atol is None:
            atol = _noise_floor(upstream, outs, eps)

        def f():  # the checked scalar Σ_k Σ u_k · y_k at the current values of xs and the weights
            return float(sum(np.sum(u * o) for u, o in zip(upstream, checked.outputs(xs))))

        input_grads = checked.gradients(xs, upstream)
        report = GradcheckReport(tol=tol, atol=float(atol), device=checked.device)
        for target in checked.targets(xs, input_grads):
            report.rows.append(_check_target(f, target, eps, max_elements, directions, rng))
    finally:
        checked.restore()
    if raise_on_failure and not report.passed:
        raise GradcheckError(f"gradient check failed for model '{model.name}':\n{report}")
    return report


def check_layer(layer, input_shape, training=False, seed=0, device="cpu", **kwargs):
    """Check one layer: wrap it in a model on float64 inputs of ``input_shape`` (batch axis included).

    ``input_shape`` is a tuple, or a list of tuples for a layer with several inputs (Concatenate).
    ``device='gpu'`` runs the layer's forward and backward with CuPy (the layer stays on the GPU afterwards).
    Other arguments as :func:`check_model`. Returns a :class:`GradcheckReport`.
    """
    many = isinstance(input_shape, list)
    shapes = input_shape if many else [input_shape]
    rng = np.random.default_rng(seed + 1)
    xs = [rng.standard_normal(s) for s in shapes]
    tensors = [Input(s[1:], dtype="float64") for s in shapes]
    out = layer(tensors if many else tensors[0])
    assert isinstance(out, SymbolicTensor)
    model = Model(tensors if many else tensors[0], out, name=f"gradcheck_{layer.name}").to(device)
    return check_model(model, xs if many else xs[0], training=training, seed=seed, **kwargs)
