r"""Gradient checking by central differences, in float64, with a random upstream gradient.

The checked scalar is ``f = Σ_k Σ u_k · y_k`` over the model's outputs ``y_k`` with fixed random ``u_k``
(never all ones, which would hide transposition bugs). For every input and every trainable weight ``θ``
the analytic ``∂f/∂θ`` from ``backward`` is compared with

* per element, for tensors up to ``max_elements`` values: ``(f(θ + εe_i) − f(θ − εe_i)) / 2ε``;
* along ``directions`` random unit directions d for larger ones: ``(f(θ + εd) − f(θ − εd)) / 2ε`` vs ``⟨∂f/∂θ, d⟩``.

The error of a tensor is ``max |numeric − analytic| / max(max |numeric|, max |analytic|)`` (per element)
or the largest error over the directions, ``|numeric − ⟨∂f/∂θ, d⟩|`` relative to the larger of the two
values and ``‖∂f/∂θ‖ / √n`` (the typical size of a projection on a random unit direction, so that a
direction nearly orthogonal to the gradient cannot turn rounding noise into a failure).

Outputs are differenced one by one: the numeric derivative is ``Σ_k (f_k(θ + εv) − f_k(θ − εv)) / 2ε`` with
``f_k = Σ u_k · y_k``, so an output that a probe does not change adds exactly nothing (summing f first would
round every probe at the scale of the largest output).

Tolerance. A tensor θ passes when its relative error is below ``tol``, or when its absolute error
``max |numeric − analytic|`` is below ``atol``: by default θ's own finite-difference noise floor

.. math::

    a_θ = \frac{16 \, ε_{mach}}{ε} \sum_{k \in R(θ)} \sum |u_k ⊙ y_k|,

a bound on what rounding alone does to a central difference of the outputs θ reaches (the error measured on small
models is about ``0.5 · ε_mach · Σ |u · y| / ε``). ``R(θ)`` holds the outputs that change when θ moves: under the
check's own probes, or under one larger random step of θ (``10⁻³ · (max |θ| + 1)`` per element) taken first.
Outputs θ does not reach neither add to ``a_θ`` nor to its differences. Without the floor a gradient that is
exactly zero (a bias feeding BatchNormalization in training mode, say) would always show a relative error of 1,
since its numeric estimate is pure rounding noise.

Inconclusive rows. A floor is only useful when it is small next to the gradient it judges. Let ``s_θ`` be θ's
gradient scale (the denominator of its relative error, the larger of ``max |numeric|`` and ``max |analytic|``)
and ``G`` the largest ``|∂f/∂θ|`` of any checked tensor. A tensor that passes only by its absolute tolerance is

* *zero within the floor* when its analytic gradient is zero to rounding, ``max |∂f/∂θ| ≤ 16 · ε_mach · G``:
  the check then shows ``|∂f/∂θ| < a_θ`` and is conclusive when ``a_θ < 0.1 · G``;
* otherwise conclusive only when ``a_θ < 0.1 · s_θ``: a tolerance as large as a tenth of the row's own gradient
  would let a gradient twice too large pass.

Any other such row, or any row with ``a_θ ≥ 0.1 · G``, makes the report INCONCLUSIVE, which fails the check
(a too small ``eps``, or outputs so large that rounding hides this tensor's share of them: check a model whose
outputs are scaled down, or that tensor with a larger ``eps``). What a zero analytic gradient cannot tell
apart: a backward that forgets a tensor whose true gradient is below ``a_θ`` (and ``a_θ < 0.1 · G``) passes
as zero. The report's ``max_error`` is the largest relative error of every row except those zero ones.

Kinks. ReLU and max pooling are not differentiable everywhere, and exact ties are common (a 1×1
convolution with zero biases reading an all-zero ReLU output has pre-activations exactly 0). A central
difference whose probes straddle such a point measures the mean of the two one-sided slopes, which the
analytic gradient (one of them, by the layer's convention: ReLU'(0) = 0, the first maximum) need not match.
So an element (or direction) whose central difference fails is probed again at ``±ε/2``; with
``g(t) = f(θ + t·v)`` it is *at a kink* when the gap between the one-sided differences does not shrink
with the step (at a smooth point it halves with the step, at a kink it stays the jump in slope:
``|gap(ε/2)| ≥ 0.75·|gap(ε)|``) and the one-sided slopes, extrapolated to second order
(``(4g(ε/2) − g(ε) − 3g(0)) / ε`` and ``(3g(0) − 4g(−ε/2) + g(−ε)) / ε``), differ by more than ten times
the tolerance and the noise floor. Such a probe is replaced by the same comparison *beside* the kink, at
``t = ±2ε`` with a fresh forward and backward pass there, on the side that agrees better (kinks are dense,
so one side may meet another within a few ε). A wrong backward still fails there, on both sides; the report
says how many probes were moved so ("at kinks, checked beside them"). Any other failing probe fails.

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
from .checks import check_flag, check_number
from .layers.base import Layer, SymbolicTensor
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

    ``rows`` holds one :class:`GradcheckRow` per tensor: ``(name, shape, method, rel_error, abs_error)``;
    ``atols``, ``scales`` and ``gradients`` hold, by tensor name, the absolute tolerance it was judged by
    (its finite-difference noise floor ``a_θ`` unless ``atol`` was given), ``s_θ`` (what its relative error
    divides by) and ``max |∂f/∂θ|``. A row passes when its relative error is below ``tol`` or its absolute
    error below its own absolute tolerance; a row that passes only by that tolerance while the tolerance is not
    small next to the gradient it judges makes the report inconclusive, which fails it (see the module
    docstring). ``kinks`` counts, per tensor, the probes that sat on a kink and were checked beside it.
    """

    rows: list = field(default_factory=list)
    tol: float = 1e-7
    #: the largest absolute tolerance of any row (each row is judged by its own, ``row.atol``)
    atol: float = 0.0
    device: str = "cpu"
    #: tensor name -> how many of its probes (elements or directions) sat on a kink and were checked beside it
    kinks: dict = field(default_factory=dict)
    #: ``G``, the largest ``|∂f/∂θ|`` of any element of any checked tensor (0 when every gradient is zero)
    gradient_scale: float = 0.0
    #: tensor name -> the absolute tolerance its row was judged by (default for a missing name: ``atol``)
    atols: dict = field(default_factory=dict)
    #: tensor name -> ``s_θ``, the scale its relative error divides by (default: ``gradient_scale``)
    scales: dict = field(default_factory=dict)
    #: tensor name -> ``max |∂f/∂θ|`` (default: ``gradient_scale``)
    gradients: dict = field(default_factory=dict)

    #: a row's absolute tolerance must stay below this fraction of the gradient it judges
    INCONCLUSIVE_FRACTION = 0.1
    #: an analytic gradient at most this many ``ε_mach`` of ``G`` is zero to rounding
    ZERO_ROUNDING = 16

    def _row_atol(self, row) -> float:
        return self.atols.get(row.name, self.atol)

    def row_passed(self, row) -> bool:
        """Whether the row's relative error is below ``tol`` or its absolute error below its ``atol``."""
        return row.rel_error < self.tol or row.abs_error < self._row_atol(row)

    def _at_noise_floor(self, row) -> bool:
        """The row passes only because its absolute error is below its absolute tolerance."""
        return row.rel_error >= self.tol and row.abs_error < self._row_atol(row)

    def _is_zero(self, row) -> bool:
        """Its analytic gradient is zero to rounding: ``max |∂f/∂θ| ≤ 16 · ε_mach · G``."""
        gradient = self.gradients.get(row.name, self.gradient_scale)
        return gradient <= self.ZERO_ROUNDING * np.finfo(np.float64).eps * self.gradient_scale

    def row_inconclusive(self, row) -> bool:
        """Whether the row's absolute tolerance ``a`` is too large for its verdict to mean anything: ``a ≥ 0.1·G``;
        or the row passes only by ``a`` while ``a ≥ 0.1·s_θ`` (``a ≥ 0.1·G`` for a gradient that is zero to
        rounding). See the module docstring."""
        fraction, a = self.INCONCLUSIVE_FRACTION, self._row_atol(row)
        if self.gradient_scale > 0 and a >= fraction * self.gradient_scale:
            return True
        if not self._at_noise_floor(row):
            return False
        if self._is_zero(row):
            return self.gradient_scale <= 0
        return a >= fraction * self.scales.get(row.name, self.gradient_scale)

    @property
    def inconclusive(self) -> bool:
        """Whether some row is inconclusive (:meth:`row_inconclusive`): a wrong gradient (twice the true one,
        say) could pass there by the absolute tolerance, so the check cannot pass. A too small ``eps`` does this
        (``f(θ ± ε)`` rounds to ``f(θ)``), or outputs so large that rounding hides a tensor's share of them."""
        return any(self.row_inconclusive(r) for r in self.rows)

    @property
    def max_error(self) -> float:
        """The largest relative error of any row, leaving out only rows whose analytic gradient is zero to
        rounding and that pass by their noise floor (a relative error means nothing there: their absolute
        error, below the floor, is what was checked)."""
        return max((r.rel_error for r in self.rows if not (self._is_zero(r) and self._at_noise_floor(r))),
                   default=0.0)

    @property
    def passed(self) -> bool:
        return not self.inconclusive and all(self.row_passed(r) for r in self.rows)

    def _verdict(self, row) -> str:
        if not self.row_passed(row):
            return "NO"
        if self.row_inconclusive(row):
            return "INCONCLUSIVE"
        if self._at_noise_floor(row):
            return "yes (zero, noise floor)" if self._is_zero(row) else "yes (noise floor)"
        return "yes"

    def __str__(self):
        lines = [f"{'tensor':<40} {'shape':<20} {'method':<12} {'max rel err':>12} {'max abs err':>12} "
                 f"{'noise floor':>12}  ok"]
        for row in self.rows:
            ok = self._verdict(row)
            if self.kinks.get(row.name):
                ok += f" ({self.kinks[row.name]} at kinks, checked beside them)"
            lines.append(f"{row.name:<40} {str(row.shape):<20} {row.method:<12} {row.rel_error:>12.3e} "
                         f"{row.abs_error:>12.3e} {self._row_atol(row):>12.1e}  {ok}")
        total = sum(self.kinks.values())
        at_kinks = f", {total} probes at kinks checked beside them" if total else ""
        lines.append(f"max relative error {self.max_error:.3e} (tolerance {self.tol:g}, noise floor up to "
                     f"{self.atol:.1e}{at_kinks}, on {self.device}): {'PASS' if self.passed else 'FAIL'}")
        if self.inconclusive:
            names = [r.name for r in self.rows if self.row_inconclusive(r)]
            lines.append(f"INCONCLUSIVE: the absolute tolerance of {', '.join(names)} is not below "
                         f"{self.INCONCLUSIVE_FRACTION:g} of the gradient it judges (its own, or the largest, "
                         f"{self.gradient_scale:.1e}), so wrong gradients would pass; choose a larger eps (or a "
                         f"smaller atol), or scale the outputs down")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the steps
class _Target(NamedTuple):
    """A tensor to check: read and write its value (NumPy float64, on the CPU) and its analytic gradient, at
    the values the check started from (``analytic``) and at the current ones (``gradient()``, a forward and
    backward pass)."""

    name: str
    get: Callable
    set: Callable
    analytic: np.ndarray
    gradient: Callable


def _float64_inputs(inputs, model, rng):
    """The check's inputs as float64 NumPy arrays (a list, one per model input); default: standard normal,
    batch 2."""
    who = f"gradient check of model '{model.name}'"
    if not model.inputs:
        raise ValueError(f"{who}: the model has no input yet (build it, or give a Sequential an Input first)")
    if inputs is None:
        return [rng.standard_normal((2,) + t.example_shape) for t in model.inputs]
    if isinstance(inputs, dict):  # by input name, as predict takes them
        unknown = sorted(set(inputs) - {t.name for t in model.inputs})
        missing = [t.name for t in model.inputs if t.name not in inputs]
        if unknown or missing:
            raise ValueError(f"{who}: inputs by name must name every model input {[t.name for t in model.inputs]}"
                             f" and nothing else (missing {missing}, unknown {unknown})")
        inputs = [inputs[t.name] for t in model.inputs]
    arrays = [np.asarray(backend.to_numpy(a)) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    if len(arrays) != len(model.inputs):
        raise ValueError(f"{who}: got {len(arrays)} input arrays for {len(model.inputs)} model inputs")
    for i, a in enumerate(arrays):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{who}: input {i} has dtype {a.dtype}; the check takes real numbers")
    return [a.astype(np.float64) for a in arrays]


class _Float64Model:
    """The model for the duration of a check: float64 inputs and weights on the model's device, random
    generators (Dropout) replayed before every call so each walk sees the same masks.

    :meth:`restore` puts back the weights (gradients cleared), the Inputs' and the layers' dtypes and the
    generators, and drops the model's tape.
    """

    def __init__(self, model, training):
        self.model, self.training, self.device = model, training, model.device
        self._saved_weights = [list(layer.weights) for layer in model.layers]
        self._saved_rngs = {id(layer): copy.deepcopy(layer.rng.bit_generator.state)
                            for layer in model.layers if hasattr(layer, "rng")}
        self._saved_dtypes = [t.dtype for t in model.inputs]
        self._saved_layer_dtypes = [layer.dtype for layer in model.layers]
        for t in model.inputs:
            t.dtype = "float64"
        for layer in model.layers:  # a layer casts its inputs to its dtype
            layer.dtype = "float64"
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

    def targets(self, xs, upstream):
        """Every input (its value lives in ``xs``, changed in place) then every trainable weight, in layer
        order, with their analytic gradients (by :meth:`gradients`) for the upstream gradients ``upstream``."""
        device = self.device
        input_grads = self.gradients(xs, upstream)
        targets = [_Target(f"input {t.name}", lambda i=i: xs[i], lambda v, i=i: xs.__setitem__(i, v), g,
                           lambda i=i: self.gradients(xs, upstream)[i])
                   for i, (t, g) in enumerate(zip(self.model.inputs, input_grads))]
        for layer in self.model.layers:
            grads = list(layer.grads)
            for j, (wname, trainable) in enumerate(zip(layer.weight_names, layer.trainable_flags)):
                if trainable:
                    targets.append(_Target(
                        f"{layer.name}/{wname}", lambda L=layer, j=j: backend.to_numpy(L.weights[j]),
                        lambda v, L=layer, j=j: L.weights.__setitem__(j, backend.to_device(v, device)), grads[j],
                        lambda L=layer, j=j: self._weight_gradient(xs, upstream, L, j)))
        return targets

    def _weight_gradient(self, xs, upstream, layer, j):
        """The analytic gradient of ``layer.weights[j]`` at the current values (a forward and backward pass)."""
        self.gradients(xs, upstream)
        return layer.grads[j]

    def restore(self):
        model = self.model
        for layer, weights in zip(model.layers, self._saved_weights):
            layer.weights = weights
            layer.grads = [None] * len(weights)
        for t, dtype in zip(model.inputs, self._saved_dtypes):
            t.dtype = dtype
        for layer, dtype in zip(model.layers, self._saved_layer_dtypes):
            layer.dtype = dtype
        for layer in model.layers:
            if id(layer) in self._saved_rngs:
                layer.rng.bit_generator.state = self._saved_rngs[id(layer)]
        model.clear_tape()


def _noise_floors(upstream, outputs, eps):
    """Per output k, ``16 · ε_mach · Σ |u_k · y_k| / eps``: what rounding alone can do to a central difference of
    ``f_k``. A tensor's noise floor ``a_θ`` sums them over the outputs it reaches."""
    f_scales = np.array([float(np.sum(np.abs(u * o))) for u, o in zip(upstream, outputs)])
    return 16 * np.finfo(np.float64).eps * f_scales / eps


def _total(terms):
    """Sum per-output terms (differences of ``f_k``, so outputs that did not move add exactly 0) to a float."""
    return float(np.sum(terms))


class _Judge(NamedTuple):
    """How a numeric derivative of one tensor is judged: the tolerances, and what the kink test needs (module
    docstring). ``f()`` gives the terms ``f_k`` of the outputs the tensor reaches (a vector)."""

    tol: float
    atol: float
    noise: float   #: the tensor's finite-difference noise floor ``a_θ``, whatever ``atol`` the caller chose
    eps: float

    def allowance(self, scale):
        """The largest ``|numeric − analytic|`` that passes for values of size ``scale``."""
        return max(self.tol * scale, self.atol)

    def at_kink(self, f, move, f_base, f_plus, f_minus, allowance):
        """Whether ``g(t)`` (``f()`` after ``move(t)``) has a kink at ``t = 0``, given ``g(0)`` and ``g(±eps)``
        (it probes ``g(±eps/2)``): the gap between the one-sided slopes does not shrink with the step, and the
        extrapolated slopes differ by far more than the tolerance and the noise floor. Values are per-output
        vectors, combined as differences from ``g(0)`` before they are summed."""
        eps = self.eps
        move(eps / 2)
        half_plus = f() - f_base
        move(-eps / 2)
        half_minus = f() - f_base
        plus, minus = f_plus - f_base, f_minus - f_base
        gap = _total(plus + minus) / eps                        # slope right − slope left, step eps
        half_gap = _total(half_plus + half_minus) / (eps / 2)   # ... step eps/2
        right = _total(4 * half_plus - plus) / eps              # one-sided slopes, second order
        left = _total(minus - 4 * half_minus) / eps
        return abs(half_gap) >= 0.75 * abs(gap) and abs(right - left) > 10 * max(allowance, self.noise)

    def beside_kink(self, f, move, slope):
        """``(numeric, analytic)`` derivatives of ``g`` beside a kink at 0, where the central difference no longer
        straddles it: at ``t = 2·eps`` and ``t = −2·eps``, the side that agrees better (ReLU makes kinks dense, so
        one side may meet another kink within a few ``eps``; a wrong gradient disagrees on both sides).
        ``slope()`` is the analytic derivative at the current values."""
        eps, pairs = self.eps, []
        for t in (2 * eps, -2 * eps):
            move(t + eps)
            plus = f()
            move(t - eps)
            minus = f()
            move(t)
            pairs.append((_total(plus - minus) / (2 * eps), slope()))
        return min(pairs, key=lambda pair: abs(pair[0] - pair[1]))


def _reached(f, target, base, f_base, rng):
    """The outputs a tensor reaches (a boolean mask): those whose ``f_k`` moves under one random step of
    ``10⁻³ · (max |θ| + 1)`` per element, large enough to change any output that depends on θ."""
    step = 1e-3 * (float(np.max(np.abs(base), initial=0.0)) + 1.0)
    target.set(base + step * rng.standard_normal(base.shape))
    moved = f() != f_base
    target.set(base)
    return moved


def _per_element(f, target, base, analytic, judge_for, reached):
    """Central differences element by element; return ``(relative error, absolute error, scale, kinks,
    judge)``."""
    n = base.size

    def move(k, step):
        probe = base.copy()
        probe.reshape(-1)[k] += step
        target.set(probe)

    eps = judge_for.eps
    plus, minus = np.empty((n, reached.size)), np.empty((n, reached.size))
    for k in range(n):
        move(k, eps)
        plus[k] = f()
        move(k, -eps)
        minus[k] = f()
    target.set(base)
    f_base = f()
    reached = reached | np.any(plus != f_base, axis=0) | np.any(minus != f_base, axis=0)
    judge = judge_for(reached)

    def g():  # the terms of the outputs this tensor reaches
        return f()[reached]

    numeric = np.sum(plus[:, reached] - minus[:, reached], axis=1) / (2 * eps)
    flat = analytic.reshape(-1)
    errors = np.abs(numeric - flat)
    scale = max(np.abs(numeric).max(initial=0.0), np.abs(flat).max(initial=0.0), 1e-300)
    allowance = judge.allowance(scale)
    kinks = 0
    for k in np.flatnonzero(errors >= allowance):
        if judge.at_kink(g, lambda step, k=k: move(k, step), f_base[reached], plus[k, reached], minus[k, reached],
                         allowance):
            kinks += 1
            numeric_k, exact_k = judge.beside_kink(
                g, lambda step, k=k: move(k, step),
                lambda k=k: float(backend.to_numpy(target.gradient()).reshape(-1)[k]))
            errors[k] = abs(numeric_k - exact_k)
            scale = max(scale, abs(numeric_k), abs(exact_k))
    abs_err = float(errors.max(initial=0.0))
    return abs_err / scale, abs_err, scale, kinks, judge


def _along_directions(f, target, base, analytic, judge_for, reached, directions, rng):
    """Central differences along random unit directions, each compared with ``⟨∂f/∂θ, d⟩``; return the
    largest ``(relative error, absolute error, scale)`` over the directions, how many sat on a kink, and the
    judge."""
    eps = judge_for.eps
    typical = float(np.linalg.norm(analytic)) / np.sqrt(base.size)

    def judged(numeric, exact):
        return abs(numeric - exact), max(abs(numeric), abs(exact), typical, 1e-300)

    probes = []
    for _ in range(directions):
        d = rng.standard_normal(base.shape)
        d /= np.linalg.norm(d)
        target.set(base + eps * d)
        plus = f()
        target.set(base - eps * d)
        probes.append((d, plus, f()))
    target.set(base)
    f_base = f()
    for _, plus, minus in probes:
        reached = reached | (plus != f_base) | (minus != f_base)
    judge = judge_for(reached)

    def g():  # the terms of the outputs this tensor reaches
        return f()[reached]

    err = abs_err = scale_max = 0.0
    kinks = 0
    for d, plus, minus in probes:
        def move(step, d=d):
            target.set(base + step * d)

        numeric, exact = _total(plus[reached] - minus[reached]) / (2 * eps), float(np.sum(analytic * d))
        difference, scale = judged(numeric, exact)
        if difference >= judge.allowance(scale):
            if judge.at_kink(g, move, f_base[reached], plus[reached], minus[reached], judge.allowance(scale)):
                kinks += 1
                numeric, exact = judge.beside_kink(
                    g, move, lambda d=d: float(np.sum(backend.to_numpy(target.gradient()) * d)))
                difference, scale = judged(numeric, exact)
        abs_err = max(abs_err, difference)
        err = max(err, difference / scale)
        scale_max = max(scale_max, scale)
    return err, abs_err, scale_max, kinks, judge


class _JudgeFor(NamedTuple):
    """Makes a tensor's :class:`_Judge` once the outputs it reaches are known: its noise floor ``a_θ`` sums the
    floors of those outputs; ``atol`` (``None``: that floor) is the absolute tolerance."""

    tol: float
    atol: float | None
    floors: np.ndarray
    eps: float

    def __call__(self, reached):
        noise = float(np.sum(self.floors[reached]))
        return _Judge(tol=self.tol, atol=noise if self.atol is None else self.atol, noise=noise, eps=self.eps)


def _check_target(f, target, judge_for, max_elements, directions, rng, reach_rng):
    """Compare one tensor's analytic gradient with central differences of ``f`` (the vector of per-output terms
    ``f_k``); leave its value as it was. Return its :class:`GradcheckRow`, how many probes sat on a kink, and
    ``(absolute tolerance, s_θ, max |∂f/∂θ|)``."""
    base = np.array(target.get(), dtype=np.float64)
    analytic = np.asarray(backend.to_numpy(target.analytic), dtype=np.float64)
    reached = _reached(f, target, base, f(), reach_rng)
    if base.size <= max_elements:
        err, abs_err, scale, kinks, judge = _per_element(f, target, base, analytic, judge_for, reached)
        method = "elements"
    else:
        err, abs_err, scale, kinks, judge = _along_directions(f, target, base, analytic, judge_for, reached,
                                                              directions, rng)
        method = f"{directions} dirs"
    target.set(base)
    gradient = float(np.max(np.abs(analytic), initial=0.0))
    return GradcheckRow(target.name, tuple(base.shape), method, err, abs_err), kinks, (judge.atol, scale, gradient)


def _check_settings(who, settings):
    """Check the checker's arguments before any work; raise naming the argument and what it accepts.

    ``settings`` maps argument names to values (only those given are checked; an unknown name is a
    ``TypeError``, as Python gives for an unexpected keyword argument). Returns them with the numbers as
    ``int`` or ``float`` (``directions=2.0`` becomes 2).
    """
    checked = dict(settings)
    numbers = {  # name: (low, integer, low_open)
        "seed": (0, True, False), "eps": (0, False, True), "tol": (0, False, True), "atol": (0, False, False),
        "max_elements": (0, True, False), "directions": (1, True, False),
    }
    for name, value in settings.items():
        if name in numbers:
            if name == "atol" and value is None:
                continue
            low, integer, low_open = numbers[name]
            checked[name] = check_number(who, name, value, low=low, integer=integer, low_open=low_open)
        elif name in ("training", "raise_on_failure"):
            check_flag(who, name, value)
        elif name == "device":
            if value not in ("cpu", "gpu"):
                raise ValueError(f"{who}: device must be 'cpu' or 'gpu', got {value!r}")
        else:
            raise TypeError(f"{who}() got an unexpected keyword argument {name!r}")
    return checked


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
        Absolute error under which a tensor passes whatever its relative error (a pass by it must still be
        conclusive, see the module docstring); default: each tensor's noise floor
        ``a_θ = 16 · ε_mach · Σ_{k ∈ R(θ)} Σ |u_k · y_k| / eps`` over the outputs it reaches. Pass 0 to judge by
        ``tol`` alone.
    raise_on_failure : bool
        Raise :class:`GradcheckError` with the report when a tensor fails both ``tol`` and ``atol``, or when
        the report is inconclusive (:attr:`GradcheckReport.inconclusive`).

    Returns
    -------
    GradcheckReport
        One :class:`GradcheckRow` per input, then per trainable weight in layer order. The model's weights,
        gradients (cleared), Input dtypes, random generators and tape are as before the call.

    Raises
    ------
    TypeError
        ``model`` is not a :class:`~tinynet.model.Model`; ``training`` or ``raise_on_failure`` not a bool.
    ValueError
        Before any work, naming the argument: ``eps`` or ``tol`` not a finite number > 0, ``atol`` not
        ``None`` or a finite number >= 0, ``directions`` not an integer >= 1, ``max_elements`` or ``seed`` not
        an integer >= 0.
    GradcheckError
        With ``raise_on_failure``, when a tensor fails or the check is inconclusive.
    """
    if not isinstance(model, Model):
        raise TypeError(f"check_model: model must be a tinynet Model, got {type(model).__name__}")
    settings = _check_settings("check_model", dict(seed=seed, eps=eps, tol=tol, atol=atol, max_elements=max_elements,
                                                   directions=directions, training=training,
                                                   raise_on_failure=raise_on_failure))
    seed, eps, tol, atol, max_elements, directions = (settings[name] for name in ("seed", "eps", "tol", "atol",
                                                                                  "max_elements", "directions"))
    rng = np.random.default_rng(seed)
    xs = _float64_inputs(inputs, model, rng)
    checked = _Float64Model(model, training)
    try:
        outs = checked.outputs(xs)
        upstream = [rng.standard_normal(o.shape) for o in outs]
        judge_for = _JudgeFor(tol=tol, atol=atol, floors=_noise_floors(upstream, outs, eps), eps=eps)
        reach_rng = np.random.default_rng((seed, 1))   # its own stream: the directions stay as they were

        def f():  # the terms f_k = Σ u_k · y_k of f, one per output, at the current values of xs and the weights
            return np.array([float(np.sum(u * o)) for u, o in zip(upstream, checked.outputs(xs))])

        report = GradcheckReport(tol=tol, device=checked.device)
        for target in checked.targets(xs, upstream):
            row, kinks, (row_atol, scale, gradient) = _check_target(f, target, judge_for, max_elements, directions,
                                                                    rng, reach_rng)
            report.rows.append(row)
            report.atols[row.name], report.scales[row.name], report.gradients[row.name] = row_atol, scale, gradient
            report.gradient_scale = max(report.gradient_scale, gradient)
            report.atol = max(report.atol, row_atol)
            if kinks:
                report.kinks[row.name] = kinks
    finally:
        checked.restore()
    if raise_on_failure and not report.passed:
        raise GradcheckError(f"gradient check failed for model '{model.name}':\n{report}")
    return report


def check_layer(layer, input_shape, training=False, seed=0, device="cpu", **kwargs):
    """Check one layer: wrap it in a model on float64 inputs of ``input_shape`` (batch axis included).

    ``input_shape`` is a tuple, or a list of tuples for a layer with several inputs (Concatenate).
    ``device='gpu'`` runs the layer's forward and backward with CuPy (the layer stays on the GPU afterwards).
    Other arguments as :func:`check_model`, and checked as it checks them, before the layer is built.
    Returns a :class:`GradcheckReport`.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"check_layer: layer must be a tinynet Layer, got {type(layer).__name__}")
    seed = _check_settings("check_layer", dict(training=training, seed=seed, device=device, **kwargs))["seed"]
    many = isinstance(input_shape, list)
    shapes = input_shape if many else [input_shape]
    for shape in shapes:
        if not isinstance(shape, tuple) or len(shape) < 2 or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d >= 1 for d in shape):
            raise ValueError(f"check_layer: input_shape must be a tuple (batch, ...) of at least two integers >= 1, "
                             f"or a list of such tuples, got {input_shape!r}")
    rng = np.random.default_rng(seed + 1)
    xs = [rng.standard_normal(s) for s in shapes]
    tensors = [Input(s[1:], dtype="float64") for s in shapes]
    out = layer(tensors if many else tensors[0])
    assert isinstance(out, SymbolicTensor)
    model = Model(tensors if many else tensors[0], out, name=f"gradcheck_{layer.name}").to(device)
    return check_model(model, xs if many else xs[0], training=training, seed=seed, **kwargs)
