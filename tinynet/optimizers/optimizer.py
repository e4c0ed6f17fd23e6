"""The optimizer base class: per-weight state keyed by name, Keras' argument names, state that saves and loads.

An optimizer reads ``layer.grads[i]`` (left by :meth:`tinynet.Model.backward`) and updates ``layer.weights[i]``
in place, for trainable weights only (BatchNormalization's moving statistics are left alone). Its per-weight
state (velocities, moments) is keyed ``'<layer name>/<weight name>'`` so it can be saved as plain arrays and
restored into a rebuilt model.

The learning rate is a number or a per-step schedule
(:class:`~tinynet.optimizers.schedules.LearningRateSchedule`), evaluated, as Keras does, at the number of
updates already made (0 for the first). Weight decay ``λ`` is decoupled, as Keras applies it before the update:
``w ← w − η λ w``.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from .. import backend, kernels
from .schedules import LearningRateSchedule, deserialize, serialize


def _resolve_lr(who, learning_rate, lr, default):
    """``learning_rate``, or the deprecated ``lr`` (with a warning), or ``default``."""
    if lr is not None:
        if learning_rate is not None:
            raise TypeError(f"{who}: give learning_rate, not both learning_rate and lr (lr is its deprecated name)")
        warnings.warn(f"{who}: the argument 'lr' is deprecated, use 'learning_rate'", DeprecationWarning,
                      stacklevel=3)
        return lr
    return default if learning_rate is None else learning_rate


def check_learning_rate(who, value):
    """``value`` as a float >= 0, or the schedule itself; ``ValueError`` otherwise."""
    if isinstance(value, LearningRateSchedule):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) \
            and float(value) >= 0:
        return float(value)
    raise ValueError(f"{who}: learning_rate must be a finite number >= 0 or a "
                     f"tinynet.optimizers.schedules.LearningRateSchedule, got {value!r}")


def _check_decay(who, value):
    if value is None:
        return 0.0
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) \
            and float(value) >= 0:
        return float(value)
    raise ValueError(f"{who}: weight_decay must be a finite number >= 0 (or None), got {value!r}")


class NonFiniteGradientError(FloatingPointError):
    """:meth:`Optimizer.step` refused a gradient holding NaN or inf; nothing changed.

    Attributes
    ----------
    key : str
        ``'<layer>/<weight>'``.
    layer, weight : str
        The layer's name and the weight's.
    """

    def __init__(self, message, key, layer, weight):
        super().__init__(message)
        self.key, self.layer, self.weight = key, layer, weight


class NonFiniteUpdateError(FloatingPointError):
    """:meth:`Optimizer.step` refused a step that would make a weight or a state array infinite or NaN (or met
    one already so); the weights, the state and :attr:`Optimizer.iterations` are as they were.

    Attributes
    ----------
    key : str
        ``'<layer>/<weight>'`` of the first weight found.
    """

    def __init__(self, message, key):
        super().__init__(message)
        self.key = key


_GPU_MAX_ABS = []  # the CuPy reduction of _gpu_largest_of_groups, made on first use


def _gpu_largest_of_groups(groups) -> list:
    """``max |a|`` over all arrays of each group of CuPy arrays of one dtype (NaN where one holds NaN or inf, 0 for
    a group of empty arrays): one reduction per group (of the group's arrays concatenated, where it has several),
    in float64 with NaN kept, left on the device; then one copy of all of them to the host. (The NumPy
    reference's ``float(a.max())`` waits for the GPU twice per array: measured on an H200, 45.8 ms of a 60.6 ms
    GoogLeNet SGD step, batch 8.)"""
    import cupy

    if not _GPU_MAX_ABS:
        _GPU_MAX_ABS.append(cupy.ReductionKernel(
            "T x", "float64 y", "fabs((double)x)", "(a != a) ? a : ((b != b) ? b : (a > b ? a : b))", "y = a",
            "0", "tinynet_max_abs", reduce_type="double"))
    found = []
    for arrays in groups:
        flat = [a.ravel() for a in arrays if a.size]
        if not flat:
            found.append(cupy.zeros((), cupy.float64))
        else:
            found.append(_GPU_MAX_ABS[0](flat[0] if len(flat) == 1 else cupy.concatenate(flat)))
    values = cupy.stack(found).get().tolist() if found else []
    return [m if math.isfinite(m) else math.nan for m in values]  # inf is NaN too, as the CPU kernels give


def _largest_of_groups(groups) -> list:
    """``max |a|`` over all arrays of each group (a list of arrays of one dtype, on one device): NaN where one
    holds NaN or inf, 0 for a group of empty arrays. On a GPU one wait for the device for all groups
    (:func:`_gpu_largest_of_groups`); on the CPU :func:`_largest_magnitudes` per group."""
    first = next((a for arrays in groups for a in arrays), None)
    if first is not None and backend.is_gpu_array(first):
        return _gpu_largest_of_groups(groups)
    found = []
    for arrays in groups:
        magnitudes = _largest_magnitudes(arrays) if arrays else []
        found.append(math.nan if any(math.isnan(m) for m in magnitudes) else max(magnitudes, default=0.0))
    return found


def _proves_all_at_once(w) -> bool:
    """Whether a step on weights like ``w`` first tries :meth:`Optimizer._proven_all_at_once`: on a GPU, where
    each wait for the device costs more than the reductions."""
    return backend.is_gpu_array(w)


def _largest_magnitudes(arrays) -> list:
    """``max |a|`` of each array (NaN for one holding NaN or inf, 0 when empty): on the CPU the kernel
    :func:`tinynet.kernels.largest_magnitudes` (with Numba one call and one pass per array at memory speed),
    on a GPU :func:`_gpu_largest_of_groups` with a group per array (one wait for the device, for all arrays)."""
    if backend.is_gpu_array(arrays[0]):
        return _gpu_largest_of_groups([[a] for a in arrays])
    # the dispatcher's checks, once: the step casts the gradient to the weight's dtype, and the state has it
    return kernels.implementation("largest_magnitudes", arrays[0])(arrays)


def fused_update() -> bool:
    """Whether an update of weight ``w`` runs as one fused kernel (:func:`tinynet.kernels.adam_update`,
    :func:`~tinynet.kernels.sgd_momentum_update`): with fast paths on (:func:`tinynet.set_fast_paths`), on the CPU
    (Numba's one pass) and on a GPU (one CUDA launch, where the plain CuPy code launches one kernel per operation).
    Otherwise the optimizer's own array code runs, the readable reference; both give the same bits."""
    return backend.fast_paths_enabled()


class Optimizer:
    """Base class: walks the trainable weights of a model and keeps per-weight state.

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.01
        A number (settable later: a trainer or a callback may change it between steps) or a per-step
        schedule, evaluated at :attr:`iterations` before each update.
    weight_decay : float, default 0
        Decoupled decay: ``w ← w − η · weight_decay · w`` before the update. ``None`` means 0, as in Keras.
    lr : float, optional
        Deprecated name of ``learning_rate`` (accepted with a ``DeprecationWarning``).

    Attributes
    ----------
    learning_rate : float
        The rate the next update uses (the schedule's value at :attr:`iterations` when there is one).
        Setting it to a number is refused when the optimizer was built on a schedule (as in Keras); setting it
        to a schedule replaces the rate. ``lr`` is its deprecated alias.
    iterations : int
        Number of :meth:`step` calls so far.
    slots : dict of str -> dict of str -> ndarray
        ``slots[slot_name]['<layer>/<weight>']``: the state arrays (e.g. ``'velocity'``).
    """

    name = "optimizer"
    slot_names: tuple = ()
    #: slots that can never hold a negative value (Adam's mean of squared gradients): a loaded state is checked
    non_negative_slots: tuple = ()

    def __init__(self, learning_rate=None, weight_decay=0.0, *, lr=None):
        who = type(self).__name__
        self._learning_rate = check_learning_rate(who, _resolve_lr(who, learning_rate, lr, 0.01))
        self.weight_decay = _check_decay(who, weight_decay)
        self.iterations = 0
        self.slots = {slot: {} for slot in self.slot_names}
        self.model = None

    # ------------------------------------------------------------- learning rate
    @property
    def learning_rate(self) -> float:
        rate = self._learning_rate
        return float(rate(self.iterations)) if isinstance(rate, LearningRateSchedule) else rate

    @learning_rate.setter
    def learning_rate(self, value):
        if not isinstance(value, LearningRateSchedule) and isinstance(self._learning_rate, LearningRateSchedule):
            raise TypeError(f"{type(self).__name__}: this optimizer was built with a learning rate schedule "
                            f"({self._learning_rate!r}), so its learning rate cannot be set to a number; build it "
                            f"with a float learning_rate to change the rate between steps")
        self._learning_rate = check_learning_rate(type(self).__name__, value)

    @property
    def lr(self) -> float:
        """Deprecated alias of :attr:`learning_rate`."""
        return self.learning_rate

    @lr.setter
    def lr(self, value):
        self.learning_rate = value

    @property
    def learning_rate_schedule(self):
        """The per-step schedule given as ``learning_rate``, or ``None`` when the rate is a number."""
        return self._learning_rate if isinstance(self._learning_rate, LearningRateSchedule) else None

    # ------------------------------------------------------------- model and device
    def attach(self, model):
        """Bind to ``model`` and register with it, so ``model.to(device)`` also moves this state.

        An optimizer serves one model: its state is keyed by layer and weight names, and two models would share
        (or miss) it. Attaching to a second model raises ``ValueError`` (Keras refuses to update variables an
        optimizer was not built for); attaching again to the same model is allowed.
        """
        if self.model is not None and self.model is not model:
            raise ValueError(f"{type(self).__name__}: this optimizer already updates another model (named "
                             f"'{self.model.name}'); give each model an optimizer of its own (its state is one "
                             f"array per weight of the model it serves)")
        if self.model is None:
            self._check_state_shapes(model)
            self.model = model
            model.add_device_listener(self)
        return self

    def _check_state_shapes(self, model):
        """``ValueError`` when a state array (one loaded before :meth:`attach`, unchecked then) has not the shape of
        its weight in ``model``: the step would raise in the middle of the update, after changing the weights
        before it."""
        wrong = []
        if any(self.slots.values()):
            for key, layer, i in self.trainable_entries(model):
                shape = tuple(layer.weights[i].shape)
                wrong += [f"{slot}:{key} {tuple(table[key].shape)} (weight {shape})"
                          for slot, table in self.slots.items() if key in table and tuple(table[key].shape) != shape]
        if wrong:
            raise ValueError(f"{type(self).__name__}.attach: the state is not for this model: {len(wrong)} shape(s) "
                             f"differ, e.g. {wrong[:5]}")

    def to(self, device):
        """Move every state array to ``'cpu'`` or ``'gpu'``."""
        for slot in self.slots.values():
            for key in slot:
                slot[key] = backend.to_device(slot[key], device)
        return self

    @staticmethod
    def trainable_entries(model):
        """Yield ``(key, layer, index)`` for every trainable weight of ``model``: ``key`` is
        ``'<layer name>/<weight name>'``, the key of the weight's state in :attr:`slots`, and the weight is
        ``layer.weights[index]``."""
        for layer in model.layers:
            for i, (name, trainable) in enumerate(zip(layer.weight_names, layer.trainable_flags)):
                if trainable:
                    yield f"{layer.name}/{name}", layer, i

    def _slot(self, slot, key, like):
        """The state array ``slots[slot][key]``, created as zeros shaped (and placed) like ``like``."""
        table = self.slots[slot]
        if key not in table:
            table[key] = backend.get_array_module(like).zeros_like(like)
        return table[key]

    # ------------------------------------------------------------- updating
    def step(self, model=None):
        """Apply one update to every trainable weight of ``model`` (default: the attached one), or none.

        The learning rate is read once, before :attr:`iterations` is incremented (a schedule sees step 0 on the
        first update, as in Keras). Every gradient is checked first: a missing one raises ``RuntimeError``, one
        that is not an array ``TypeError``, one whose shape is not its weight's ``ValueError`` naming both, a
        learning rate (or its product with the weight decay) negative, NaN or beyond the weights' float type
        ``ValueError``, and
        a gradient (or a weight, or a state array) holding NaN or inf :class:`NonFiniteGradientError`; then no
        weight, state or count has changed.

        The update is then all or nothing: a step that would make a weight or a state array infinite or NaN
        (a finite gradient times a huge learning rate, a square that overflows) raises
        :class:`NonFiniteUpdateError` with every weight, state array and :attr:`iterations` as they were.
        This costs one pass over every weight, gradient and state array (their largest magnitudes, see
        :meth:`_update_bounds`; with the Numba kernels one call per weight), no copy: only when those do not
        prove the result finite are the arrays the step touches copied first, checked after, and put back on
        failure.

        Raises
        ------
        NonFiniteGradientError, NonFiniteUpdateError
            Both ``FloatingPointError``; nothing has changed.
        """
        if model is None:
            model = self.model
            if model is None:
                raise RuntimeError(f"{type(self).__name__}.step: no model; call attach(model) or pass it")
        else:
            self.attach(model)  # binds a first model; another model than the attached one raises
        entries = []
        for key, layer, i in self.trainable_entries(model):
            g, w = layer.grads[i], layer.weights[i]
            if g is None:
                raise RuntimeError(f"{type(self).__name__}: no gradient for '{key}'; run model.backward first")
            if not hasattr(g, "shape") or not hasattr(g, "astype"):
                raise TypeError(f"{type(self).__name__}: the gradient of '{key}' is a {type(g).__name__}, not an "
                                f"array")
            if tuple(g.shape) != tuple(w.shape):
                raise ValueError(f"{type(self).__name__}: the gradient of '{key}' has shape {tuple(g.shape)}, "
                                 f"the weight {tuple(w.shape)}")
            if backend.is_gpu_array(g) != backend.is_gpu_array(w):
                where = {True: "the GPU", False: "the CPU"}
                raise TypeError(f"{type(self).__name__}: the gradient of '{key}' is on {where[backend.is_gpu_array(g)]}"
                                f", the weight on {where[backend.is_gpu_array(w)]}; move the model with "
                                f"model.to('gpu'|'cpu') and compute its gradients there")
            entries.append((key, layer, i, w, g))
        lr = self.learning_rate
        self._check_rates(lr, {w.dtype for *_, w, _ in entries})
        for n, (key, layer, i, w, g) in enumerate(entries):
            if g.dtype != w.dtype:
                with np.errstate(over="ignore", invalid="ignore"):
                    entries[n] = (key, layer, i, w, g.astype(w.dtype))
        if entries and _proves_all_at_once(entries[0][3]) and self._proven_all_at_once(entries, lr):
            self.iterations += 1
            self._apply([(key, w, g) for key, _, _, w, g in entries], lr)
            return
        # the largest magnitudes of every weight, gradient and state array (checked finite), and the bounds
        prepared, proven, limits = [], True, {}
        for key, layer, i, w, g in entries:
            held = [slot for slot in self.slot_names if key in self.slots[slot]]  # the others: created as 0
            g_max, w_max, *held_max = _largest_magnitudes([g, w] + [self.slots[slot][key] for slot in held])
            if not math.isfinite(g_max):
                raise NonFiniteGradientError(
                    f"{type(self).__name__}: the gradient of '{key}' holds NaN or inf"
                    + (f" (once cast to the weight's {w.dtype})" if g.dtype != layer.grads[i].dtype else "")
                    + "; the step is not applied", key, layer.name, layer.weight_names[i])
            if not math.isfinite(w_max):
                raise NonFiniteUpdateError(f"{type(self).__name__}: the weight '{key}' holds NaN or inf already; "
                                           f"the step is not applied", key)
            slots = dict.fromkeys(self.slot_names, 0.0)
            for slot, s_max in zip(held, held_max):
                if not math.isfinite(s_max):
                    raise NonFiniteUpdateError(f"{type(self).__name__}: the state '{slot}:{key}' holds NaN or inf; "
                                               f"the step is not applied", key)
                slots[slot] = s_max
            limit = limits.get(w.dtype)
            if limit is None:  # half the dtype's largest number: a margin for the rounding the bounds leave out
                limit = limits[w.dtype] = float(np.finfo(w.dtype).max) / 2
            if proven:  # every bound at most the limit; NaN (0 · inf in a bound) fails it (max() would skip it)
                for bound in self._update_bounds(w_max, g_max, slots, lr, w.dtype):
                    if not bound <= limit:
                        proven = False
                        break
            prepared.append((key, w, g))
        if proven:
            self.iterations += 1
            self._apply(prepared, lr)
        else:
            self._checked_step(prepared, lr)

    def _proven_all_at_once(self, entries, lr) -> bool:
        """Whether the bounds of :meth:`_update_bounds`, from the largest magnitudes over all weights of one dtype
        (over all their weights, over all their gradients, over each state), prove every weight's step finite.

        Those are at least each weight's own, and a bound never shrinks when a magnitude grows, so True proves
        the step as the per-weight checks of :meth:`step` would. They are read in one wait for the device
        (:func:`_largest_of_groups`); False (a NaN or inf anywhere, or a bound past the limit) leaves the
        decision, and the error that names the weight, to the per-weight checks.
        """
        groups = {}  # (dtype, role) -> arrays; role: "weight", "gradient" or ("state", slot)
        for key, _, _, w, g in entries:
            groups.setdefault((w.dtype, "weight"), []).append(w)
            groups.setdefault((w.dtype, "gradient"), []).append(g)
            for slot in self.slot_names:
                held = groups.setdefault((w.dtype, ("state", slot)), [])
                if key in self.slots[slot]:
                    held.append(self.slots[slot][key])
        maxima = dict(zip(groups, _largest_of_groups(list(groups.values()))))
        if not all(math.isfinite(m) for m in maxima.values()):
            return False
        for dtype in {dtype for dtype, _ in groups}:
            limit = float(np.finfo(dtype).max) / 2  # as in step
            slots = {slot: maxima[dtype, ("state", slot)] for slot in self.slot_names}
            bounds = self._update_bounds(maxima[dtype, "weight"], maxima[dtype, "gradient"], slots, lr, dtype)
            if not all(bound <= limit for bound in bounds):  # NaN fails, as in step
                return False
        return True

    def _apply(self, prepared, lr):
        for key, w, g in prepared:
            if self.weight_decay:
                w -= w.dtype.type(lr * self.weight_decay) * w
            self._update(key, w, g, lr)

    def _checked_step(self, prepared, lr):
        """The step when the bounds do not prove it finite: copy what it touches, step, check, put back on
        failure (or on any error)."""
        saved_iterations = self.iterations
        saved, created = [], []  # (array, copy); the slots this step creates are removed on failure
        for key, w, _ in prepared:
            saved.append((w, w.copy()))
            for slot in self.slot_names:
                table = self.slots[slot]
                if key in table:
                    saved.append((table[key], table[key].copy()))
                else:
                    created.append((slot, key))
        bad = None
        try:
            self.iterations += 1
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self._apply(prepared, lr)
            for key, w, _ in prepared:
                touched = [("weight", w)] + [(f"state '{slot}'", self.slots[slot][key])
                                             for slot in self.slot_names if key in self.slots[slot]]
                found = _largest_magnitudes([array for _, array in touched])
                bad = next(((key, what) for (what, _), m in zip(touched, found) if not math.isfinite(m)), None)
                if bad is not None:
                    break
        except BaseException:
            self._put_back(saved, created, saved_iterations)
            raise
        if bad is not None:
            self._put_back(saved, created, saved_iterations)
            key, what = bad
            raise NonFiniteUpdateError(
                f"{type(self).__name__}: update {saved_iterations + 1} would make the {what} of '{key}' infinite or "
                f"NaN (learning rate {lr:g}, finite gradients); the step is not applied: the weights, the state "
                f"and the step count are as before", key)

    def _put_back(self, saved, created, iterations):
        for array, copy in saved:
            array[...] = copy
        for slot, key in created:
            self.slots[slot].pop(key, None)
        self.iterations = iterations

    def _update_bounds(self, w_max, g_max, slot_max, lr, dtype):
        """Bounds of the step from the largest magnitudes of a weight, its gradient and its state.

        Parameters
        ----------
        w_max, g_max : float
            ``max |w|`` and ``max |g|`` (``g`` in the weight's dtype).
        slot_max : dict of str -> float
            ``max |s|`` of each state array of the weight (0 for one the step creates).
        lr : float
        dtype : numpy.dtype
            The weight's.

        Returns
        -------
        list of float
            Bounds of the magnitude of every value the update computes for this weight (the new weight, the new
            state, the intermediates); the step runs without copies when all are at most half the dtype's
            largest number. No bound may shrink when one of the magnitudes grows: on a GPU the step first tries
            the maxima over all weights (:meth:`_proven_all_at_once`). The base class proves nothing
            (``[inf]``): a subclass's step is then always checked, with copies.
        """
        return [math.inf]

    def _decayed(self, w_max, lr):
        """A bound of the weight after the decoupled decay ``w − η λ w``."""
        return w_max * (1.0 + lr * self.weight_decay)

    def _check_rates(self, lr, dtypes):
        """Refuse, before any weight changes, a learning rate (or its product with the weight decay) that does not
        fit the weights' float type: rounded to it, it would be infinite and turn every weight it touches into
        ±inf or NaN (0 · inf). A negative or NaN one (a schedule's value, or a weight decay set on the attribute)
        is refused too: the bounds of :meth:`_update_bounds` hold for rates >= 0 only."""
        for dtype in dtypes:
            largest = float(np.finfo(dtype).max)
            for what, value in (("the learning rate", lr), ("learning_rate × weight_decay", lr * self.weight_decay)):
                if not 0.0 <= value <= largest:
                    raise ValueError(f"{type(self).__name__}: {what} is {value:g}, "
                                     + (f"beyond the largest {dtype} ({largest:g}); the update would make the "
                                        f"weights infinite or NaN" if value > largest else
                                        "not a number >= 0 (check the learning rate schedule); the step is not "
                                        "applied"))

    def _update(self, key, w, g, lr):
        """Update ``w`` in place from gradient ``g`` with learning rate ``lr`` (a float)."""
        raise NotImplementedError

    # ------------------------------------------------------------- state
    def get_config(self) -> dict:
        """JSON-able hyper-parameters plus ``'name'``; a schedule is stored as ``{'class_name', 'config'}``."""
        rate = self._learning_rate
        return {"name": self.name, "learning_rate": serialize(rate) if isinstance(rate, LearningRateSchedule)
                else rate, "weight_decay": self.weight_decay}

    @classmethod
    def from_config(cls, config):
        """Rebuild from :meth:`get_config` (``'name'`` and an older ``'lr'`` key accepted)."""
        config = {k: v for k, v in config.items() if k != "name"}
        if "lr" in config and "learning_rate" not in config:
            config["learning_rate"] = config.pop("lr")
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = deserialize(config["learning_rate"])
        return cls(**config)

    def state_dict(self) -> dict:
        """The full state: ``{'config': {...}, 'iterations': int, 'arrays': {'slot:layer/weight': ndarray}}``.

        ``config`` and ``iterations`` are JSON-able; ``arrays`` are NumPy arrays (copied from the GPU if needed),
        ready for ``np.savez``. A slot that has been used holds one array per trainable weight.
        """
        arrays = {f"{slot}:{key}": backend.to_numpy(value).copy()
                  for slot, table in self.slots.items() for key, value in table.items()}
        return {"config": self.get_config(), "iterations": int(self.iterations), "arrays": arrays}

    def _clean_config(self, where, config):
        """The config's values checked against this optimizer's (types, and the constructor's own checks)."""
        name = config.get("name", self.name)
        if name != self.name:
            raise ValueError(f"{where}: the state is for a {name!r} optimizer, this one is {self.name!r}")
        current = {k: v for k, v in self.get_config().items() if k != "name"}
        given = {k: v for k, v in config.items() if k != "name"}
        clean = {}
        for key, value in given.items():
            canonical = "learning_rate" if key == "lr" else key  # checkpoints written before the Keras names
            if canonical not in current:
                continue
            if canonical == "learning_rate":
                if isinstance(value, dict):
                    try:
                        clean[key] = deserialize(value)
                    except ValueError as error:
                        raise ValueError(f"{where}: config {key!r}: {error}") from None
                elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
                        or not math.isfinite(value):
                    raise ValueError(f"{where}: config {key!r} must be a finite number or a serialized learning "
                                     f"rate schedule, got {value!r}")
                else:
                    clean[key] = float(value)
            elif isinstance(current[key], bool):
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"{where}: config {key!r} must be a bool, got {value!r}")
                clean[key] = bool(value)
            elif isinstance(current[key], (int, float)):
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                        or not math.isfinite(value):
                    raise ValueError(f"{where}: config {key!r} must be a finite number, got {value!r}")
                clean[key] = type(current[key])(value)
            else:
                clean[key] = value
        canonical_keys = ["learning_rate" if k == "lr" else k for k in given]
        if set(canonical_keys) != set(current) or len(canonical_keys) != len(set(canonical_keys)):
            unknown = sorted(k for k in given if ("learning_rate" if k == "lr" else k) not in current)
            twice = ["lr", "learning_rate"] if "lr" in given and "learning_rate" in given else []
            raise ValueError(f"{where}: config keys differ: missing {sorted(set(current) - set(canonical_keys))}, "
                             f"unknown {unknown}" + (f", given twice (old and new name) {twice}" if twice else ""))
        clean = {("learning_rate" if k == "lr" else k): v for k, v in clean.items()}
        try:
            type(self)(**clean)  # the constructor's own range checks (e.g. SGD's momentum in [0, 1))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: bad config: {error}") from None
        return clean

    def slots_in_use(self, config=None) -> tuple:
        """The slots :meth:`step` fills, for every trainable weight, under ``config`` (default: this optimizer's
        own): all of :attr:`slot_names` here; a subclass whose update skips a slot for some settings (SGD without
        momentum keeps no velocity) narrows it."""
        return tuple(self.slot_names)

    def validate_state_dict(self, state) -> dict:
        """Check ``state`` (as :meth:`state_dict` returns it) against this optimizer and its model; change nothing.

        Checked: the three fields; ``config`` has this optimizer's name and exactly its keys (``'lr'``, the
        older name of ``'learning_rate'``, is accepted), with values of the right types that its constructor
        accepts; ``iterations`` is a non-negative integer; every array key is ``'<slot>:<layer>/<weight>'``
        with one of this optimizer's slots and, when a model is attached, a trainable weight of that model
        with the same shape, and a slot that is present covers every trainable weight (so state from another
        model is refused here, with the keys that differ, not at the first step); after a step
        (``iterations > 0``) every slot the update uses (:meth:`slots_in_use`) is present (only a fresh state
        may have no arrays); every array is floating-point and finite, also once cast to its weight's dtype
        (a float64 1e300 is refused for a float32 weight, not loaded as inf), and non-negative in
        :attr:`non_negative_slots`.

        Returns
        -------
        dict
            ``{'config': {...}, 'iterations': int, 'slots': {slot: {key: array}}}``, arrays converted to the
            weights' dtypes and placed on the model's device: what :meth:`load_state_dict` assigns.

        Raises
        ------
        ValueError
            Naming what is wrong.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict):
            raise ValueError(f"{where}: expected a dict with 'config', 'iterations' and 'arrays', "
                             f"got {type(state).__name__}")
        missing = [k for k in ("config", "iterations", "arrays") if k not in state]
        if missing:
            raise ValueError(f"{where}: the state lacks {missing}")
        config = state["config"]
        if not isinstance(config, dict):
            raise ValueError(f"{where}: 'config' must be a dict, got {type(config).__name__}")
        clean = self._clean_config(where, config)
        iterations = state["iterations"]
        if isinstance(iterations, (bool, np.bool_)) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
            raise ValueError(f"{where}: 'iterations' must be a non-negative integer, got {iterations!r}")
        arrays = state["arrays"]
        if not isinstance(arrays, dict):
            raise ValueError(f"{where}: 'arrays' must be a dict, got {type(arrays).__name__}")
        trainable = ({key: layer.weights[i] for key, layer, i in self.trainable_entries(self.model)}
                     if self.model is not None else None)
        slots = {slot: {} for slot in self.slot_names}
        unknown, wrong_shape = [], []
        for full_key, value in arrays.items():
            if not isinstance(full_key, str) or ":" not in full_key:
                raise ValueError(f"{where}: array key {full_key!r} is not '<slot>:<layer>/<weight>'")
            slot, key = full_key.split(":", 1)
            if slot not in slots:
                raise ValueError(f"{where}: unknown slot {slot!r} in {full_key!r}; {type(self).__name__} has "
                                 f"{list(self.slot_names) or 'none'}")
            value = np.asarray(value)
            if value.dtype.kind != "f":
                raise ValueError(f"{where}: {full_key!r} has dtype {value.dtype}, expected a floating-point array")
            if not np.isfinite(value).all():
                raise ValueError(f"{where}: {full_key!r} holds NaN or infinite values; the next step would write "
                                 f"them into the weights")
            if trainable is not None:
                if key not in trainable:
                    unknown.append(full_key)
                    continue
                if value.shape != tuple(trainable[key].shape):
                    wrong_shape.append(f"{full_key} {value.shape} (weight {tuple(trainable[key].shape)})")
                    continue
                dtype = np.dtype(trainable[key].dtype)
                with np.errstate(over="ignore"):  # an overflow is refused just below, by name
                    value = value.astype(dtype)
                if not np.isfinite(value).all():  # checked again once cast: float64 1e300 is inf in float32
                    raise ValueError(f"{where}: {full_key!r} holds values beyond the range of {dtype} (largest "
                                     f"{float(np.finfo(dtype).max):g}), which become infinite once cast to the "
                                     f"weight's dtype; the next step would write them into the weights")
            else:
                value = value.copy()
            if slot in self.non_negative_slots and (value < 0).any():
                raise ValueError(f"{where}: {full_key!r} holds negative values (min {float(value.min()):g}); "
                                 f"{type(self).__name__}'s {slot!r} is a running mean of squares, never negative")
            slots[slot][key] = value
        incomplete = []
        if trainable is not None:
            # a slot that is present covers every trainable weight; after a step (iterations > 0), so does every
            # slot the update uses: a state without them would restart the moments but keep the step count
            used = self.slots_in_use(clean) if iterations > 0 else ()
            for slot, table in slots.items():
                if table or slot in used:
                    incomplete += [f"{slot}:{key}" for key in trainable if key not in table]
        if unknown or wrong_shape or incomplete:
            parts = []
            if unknown:
                parts.append(f"{len(unknown)} key(s) for weights that are not trainable weights of this model, "
                             f"e.g. {unknown[:5]}")
            if wrong_shape:
                parts.append(f"{len(wrong_shape)} shape(s) that differ, e.g. {wrong_shape[:5]}")
            if incomplete:
                parts.append(f"no state for {len(incomplete)} trainable weight(s), e.g. {incomplete[:5]}"
                             + (f" (after {int(iterations)} steps every slot the update uses, "
                                f"{list(self.slots_in_use(clean))}, must be there; only a state of 0 steps may "
                                f"have none)" if iterations > 0 else ""))
            raise ValueError(f"{where}: the state is not for this model: " + "; ".join(parts))
        device = self.model.device if self.model is not None else "cpu"
        slots = {slot: {key: backend.to_device(v, device) for key, v in table.items()} for slot, table in slots.items()}
        return {"config": clean, "iterations": int(iterations), "slots": slots}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned, all or nothing (arrays go to the attached model's device).

        Everything is checked first (see :meth:`validate_state_dict`); on any error this optimizer is left
        exactly as it was. Attach the optimizer to its model before loading, so the keys and shapes are
        checked against it. The learning rate is restored as saved (a number or a schedule).
        """
        prepared = self.validate_state_dict(state)
        for key, value in prepared["config"].items():
            if key == "learning_rate":
                self._learning_rate = value
            else:
                setattr(self, key, value)
        self.iterations = prepared["iterations"]
        self.slots = prepared["slots"]
        return self

    def __repr__(self):
        config = {k: v for k, v in self.get_config().items() if k != "name"}
        config["learning_rate"] = self._learning_rate
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in config.items())})"


__all__ = ["Optimizer", "check_learning_rate", "NonFiniteGradientError", "NonFiniteUpdateError"]
