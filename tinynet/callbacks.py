"""Callbacks with Keras' names, hooks and behaviour, for :meth:`tinynet.Model.fit` (and the trainer's ``fit``).

==============================  ==================================================================================
callback                        does
==============================  ==================================================================================
:class:`Callback`               the base: ``on_train_begin/end``, ``on_epoch_begin/end(epoch, logs)``,
                                ``on_train_batch_begin/end(batch, logs)``, ``on_test_*``, ``on_predict_*``;
                                ``self.model`` (set by ``set_model``), ``self.params`` (``set_params``);
                                setting ``self.model.stop_training = True`` ends training after the epoch
:class:`History`                records every epoch's logs; what ``fit`` returns
:class:`ProgbarLogger`          the progress display (``verbose=1``: a tqdm bar per epoch; ``2``: one line)
:class:`EarlyStopping`          stops when ``monitor`` has not improved for ``patience`` epochs
:class:`ModelCheckpoint`        saves the weights (``.npz``) or the whole training state (a checkpoint folder)
:class:`LearningRateScheduler`  sets the learning rate at each epoch's start from ``schedule(epoch, lr)``
:class:`ReduceLROnPlateau`      multiplies the learning rate by ``factor`` when ``monitor`` stalls
:class:`CSVLogger`              one row per epoch in a CSV file (rewritten whole, atomically, every epoch)
:class:`TerminateOnNaN`         stops training when the loss is NaN or infinite
:class:`LambdaCallback`         hooks from plain functions
==============================  ==================================================================================

Epochs are numbered from 0 in the hooks (``on_epoch_end(0, logs)`` ends the first), as in Keras; file names
and messages count from 1 (``{epoch}`` in :class:`ModelCheckpoint`'s path is 1 for the first epoch).

``logs`` at the end of a batch hold the running means of the epoch so far (``loss``, ``<output>_loss``, the
metrics); at the end of an epoch, the epoch's values and the ``val_`` ones (a
:class:`~tinynet.training.Trainer` adds ``lr``, ``epoch`` (1-based) and ``time``; the callbacks' own epoch count
wins over that ``epoch``). Every file a callback writes goes through :mod:`tinynet.fileio` (a temporary file,
then an atomic rename).

Bad arguments fail when a callback is built (``ValueError`` naming the callback and the argument); a file or
folder that cannot be written fails in ``on_train_begin``, before the first step (an ``OSError`` naming the
callback and the path).

Data-parallel training (:mod:`tinynet.distributed`): every rank runs every callback with the same, global
logs, so decisions (``EarlyStopping``, ``ReduceLROnPlateau``, ``TerminateOnNaN``, a ``LearningRateScheduler``)
are taken alike everywhere; callbacks that write files or show progress (``chief_only = True``:
:class:`ProgbarLogger`, :class:`ModelCheckpoint`, :class:`CSVLogger`) run on rank 0 only, and the others print
nothing (``self.chief`` is False on the other ranks). A callback of your own that writes files should set
``chief_only = True`` too.

Divergence: tinynet's loop stops on a non-finite loss or gradient *before* applying the step and raises
:class:`tinynet.training.TrainingDiverged`. It first reports the batch to ``on_train_batch_end`` with
``logs['loss'] = nan``; when a callback then sets ``model.stop_training`` (as :class:`TerminateOnNaN` does),
``fit`` ends quietly instead of raising, and returns the history of the epochs completed.
"""
from __future__ import annotations

import csv
import errno
import inspect
import io
import math
import os
import stat
import string
import warnings

import numpy as np

from . import fileio
from .checks import check_flag, check_number


# ------------------------------------------------------------------------------------------ argument checks
def _number(callback, name, value, **bounds):
    """``value`` checked by :func:`tinynet.checks.check_number`; the ``ValueError`` names the callback's class."""
    return check_number(type(callback).__name__, name, value, **bounds)


def _optional_number(callback, name, value):
    """``None``, or a finite number (:func:`_number`)."""
    return None if value is None else _number(callback, name, value)


def _flag(callback, name, value):
    """``value`` as a bool (:func:`tinynet.checks.check_flag`); the ``ValueError`` names the callback's class."""
    return check_flag(type(callback).__name__, name, value, ValueError)


def _verbose(callback, verbose):
    """``verbose`` as an int >= 0 (``True`` and ``False`` count as 1 and 0)."""
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    return _number(callback, "verbose", verbose, low=0, integer=True)


def _non_empty_string(callback, name, value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"{type(callback).__name__}: {name} must be a non-empty string, got {value!r}")
    return value


def _path(callback, name, value):
    """``value`` (a ``str`` or :class:`os.PathLike`) as a non-empty ``str``; ``ValueError`` otherwise."""
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(path, str) or not path:
        raise ValueError(f"{type(callback).__name__}: {name} must be a non-empty str or os.PathLike path, got "
                         f"{value!r}")
    return path


def _check_writable(callback, path, folder, make_folders):
    """Before training: raise an ``OSError`` naming the callback and ``path`` unless a file can be created in
    ``folder`` (``path``'s folder; with ``make_folders``, the nearest existing folder above it, as the missing
    ones are made at save time): :func:`tinynet.fileio.check_writable_folder`."""
    try:
        fileio.check_writable_folder(folder, make_folders)
    except OSError as error:
        raise type(error)(f"{type(callback).__name__}: cannot write {path!r}: {error}") from None


class Callback:
    """Base class of the callbacks (Keras' ``keras.callbacks.Callback``): every hook does nothing.

    Attributes
    ----------
    model : tinynet.Model
        Set by :meth:`set_model` before training starts.
    params : dict
        ``{'verbose': int, 'epochs': int, 'steps': int}``, set by :meth:`set_params`.
    chief : bool
        False on the ranks other than 0 in data-parallel training (set by :meth:`CallbackList.set_chief`): print
        nothing there.
    chief_only : bool (class attribute)
        True for a callback that writes files or shows progress: in data-parallel training only rank 0 runs it.
    """

    chief_only = False
    chief = True

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        """Called once before the first epoch."""

    def on_train_end(self, logs=None):
        """Called once after the last epoch (also after an early stop); ``logs`` of the last epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch, logs=None):
        """Called at the end of epoch ``epoch`` with its logs (training and ``val_`` values). A callback may add
        entries (as :class:`ReduceLROnPlateau` adds ``learning_rate``); :class:`History` records them."""

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        """Called after each training step with the epoch's running means so far."""
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch, logs=None):
        """Keras' older name of :meth:`on_train_batch_begin` (called by it)."""

    def on_batch_end(self, batch, logs=None):
        """Keras' older name of :meth:`on_train_batch_end` (called by it)."""

    def on_test_begin(self, logs=None):
        """Called when an evaluation starts (``evaluate``, or validation during ``fit``)."""

    def on_test_end(self, logs=None):
        """Called when an evaluation ends, with its logs."""

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass

    def on_predict_batch_begin(self, batch, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass


class CallbackList(Callback):
    """Calls every hook on each callback in turn.

    Parameters
    ----------
    callbacks : list of Callback
    add_history : bool
        Append a :class:`History` (last, so it records what the other callbacks added to ``logs``).
    add_progbar : bool
        Put a :class:`ProgbarLogger` first (with ``params['verbose']``).
    model : tinynet.Model, optional
    **params
        Given to every callback's :meth:`set_params`.
    """

    def __init__(self, callbacks=None, add_history=False, add_progbar=False, model=None, **params):
        super().__init__()
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be tinynet.callbacks.Callback objects, got {type(cb).__name__}")
        self.callbacks = callbacks
        self.history = None
        if add_progbar and not any(isinstance(cb, ProgbarLogger) for cb in callbacks):
            self.callbacks.insert(0, ProgbarLogger())
        if add_history:
            self.history = next((cb for cb in callbacks if isinstance(cb, History)), None)
            if self.history is None:
                self.history = History()
                self.callbacks.append(self.history)
        if model is not None:
            self.set_model(model)
        if params:
            self.set_params(params)

    def set_model(self, model):
        super().set_model(model)
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for cb in self.callbacks:
            cb.set_params(params)

    def set_chief(self, chief):
        """Tell every callback whether this process is rank 0 (``chief``) of a data-parallel run; on the other
        ranks the ``chief_only`` callbacks are skipped."""
        self.chief = bool(chief)
        for cb in self.callbacks:
            cb.chief = self.chief

    def _call(self, hook, *args):
        for cb in self.callbacks:
            if self.chief or not cb.chief_only:
                getattr(cb, hook)(*args)

    def on_train_begin(self, logs=None):
        self._call("on_train_begin", logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._call("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._call("on_train_batch_end", batch, logs)

    def on_test_begin(self, logs=None):
        self._call("on_test_begin", logs)

    def on_test_end(self, logs=None):
        self._call("on_test_end", logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._call("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._call("on_test_batch_end", batch, logs)

    def on_predict_begin(self, logs=None):
        self._call("on_predict_begin", logs)

    def on_predict_end(self, logs=None):
        self._call("on_predict_end", logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._call("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._call("on_predict_batch_end", batch, logs)

    def __iter__(self):
        return iter(self.callbacks)


class History(Callback):
    """Records every epoch's logs: ``history.history`` is ``{key: [value per epoch]}`` (what ``fit`` returns).

    Attributes
    ----------
    history : dict of str -> list
    epoch : list of int
        The epochs recorded (0-based).
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None:
            self.model.history = self


def _format_logs(logs, skip=()):
    return " - ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in logs.items()
                      if k not in skip)


class ProgbarLogger(Callback):
    """The progress display of ``fit`` and ``evaluate``, from ``params['verbose']``.

    ``verbose=1``: ``Epoch 3/10`` then a tqdm bar over the epoch's steps with the running logs, finished with
    the ``val_`` values; ``verbose=2``: one line per epoch; ``0``: nothing. Rank 0 only in data-parallel
    training.
    """

    chief_only = True

    def __init__(self):
        super().__init__()
        self.bar = None
        self.verbose = 1
        self.epochs = 1

    def set_params(self, params):
        super().set_params(params)
        self.verbose = params.get("verbose", 1)
        self.epochs = params.get("epochs", 1)

    def close(self):
        """Close the bar in progress, if any (``fit`` calls it when training stops with an error)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.verbose:
            from tqdm.auto import tqdm

            tqdm.write(f"Epoch {epoch + 1}/{self.epochs}")
            if self.verbose == 1:
                self.bar = tqdm(total=self.params.get("steps"), unit="step", leave=True, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.set_postfix_str(_format_logs(logs or {}), refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        text = _format_logs(logs or {}, skip=("epoch",))  # "Epoch 3/10" says it (the Trainer logs an 'epoch')
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
            self.close()
        elif self.verbose:
            from tqdm.auto import tqdm

            tqdm.write(text)

    def on_train_end(self, logs=None):
        self.close()

    def on_test_begin(self, logs=None):
        if self.verbose == 1 and self.params.get("evaluating"):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.params.get("steps"), unit="step", leave=True, dynamic_ncols=True)

    def on_test_batch_end(self, batch, logs=None):
        if self.bar is not None and self.params.get("evaluating"):
            self.bar.set_postfix_str(_format_logs(logs or {}), refresh=False)
            self.bar.update(1)

    def on_test_end(self, logs=None):
        if self.params.get("evaluating"):
            if self.bar is not None:
                self.bar.set_postfix_str(_format_logs(logs or {}), refresh=True)
                self.close()
            elif self.verbose:
                from tqdm.auto import tqdm

                tqdm.write(_format_logs(logs or {}))


# ------------------------------------------------------------------------------------------ monitoring
def monitor_direction(model, monitor):
    """``'min'`` or ``'max'`` for the logged quantity ``monitor`` (``mode='auto'``), or ``None`` if unknown.

    Losses (``loss``, ``val_loss``, ``<output>_loss``, ``loss_<head>``) are minimised; a compiled metric's
    ``direction`` decides for its key (``accuracy``, ``<output>_accuracy``, ...), and one without (a function of
    the user's) is unknown, as in Keras; other names with ``acc`` or ``top`` (the trainer's ``acc``, ``top5``)
    are maximised.
    """
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name == "loss" or name.endswith("_loss") or name.startswith("loss_"):
        return "min"
    for metric in getattr(model, "metrics", None) or []:
        metric_name = getattr(metric, "name", None)
        if metric_name and (name == metric_name or name.endswith("_" + metric_name)):
            return {"up": "max", "down": "min"}.get(getattr(metric, "direction", None))
    if "acc" in name or name.startswith("top"):
        return "max"
    return None


class MonitorCallback(Callback):
    """Base of the callbacks that watch a logged quantity (Keras' ``MonitorCallback``).

    Parameters
    ----------
    monitor : str
        A key of the logs (non-empty).
    mode : {'auto', 'min', 'max'}
        ``'auto'`` reads the direction from the name and the compiled metrics (see :func:`monitor_direction`)
        and raises ``ValueError`` when it cannot tell.
    baseline : float, optional
        The initial "best" value.
    min_delta : float >= 0
        A change smaller than this is no improvement.

    Raises
    ------
    ValueError
        At construction, naming the callback and the argument, for a ``monitor`` that is not a non-empty
        string, an unknown ``mode`` (Keras warns and falls back to ``'auto'``; tinynet refuses the typo), a
        ``baseline`` that is not a finite number, or a negative ``min_delta``; in ``on_train_begin``, before
        the first step, for ``mode='auto'`` on a ``monitor`` whose direction cannot be told.
    """

    def __init__(self, monitor="val_loss", mode="auto", baseline=None, min_delta=0):
        super().__init__()
        self.monitor = _non_empty_string(self, "monitor", monitor)
        if not isinstance(mode, str) or mode not in ("auto", "min", "max"):
            raise ValueError(f"{type(self).__name__}: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.best = _optional_number(self, "baseline", baseline)
        self.min_delta = _number(self, "min_delta", min_delta, low=0)
        self.monitor_op = None

    def _set_monitor_op(self):
        direction = self.mode if self.mode != "auto" else monitor_direction(self.model, self.monitor)
        if direction is None:
            raise ValueError(f"{type(self).__name__} callback received monitor={self.monitor}, but tinynet cannot "
                             f"tell whether that quantity should be maximized or minimized. Pass mode='max' to "
                             f"monitor the highest value, or mode='min' for the lowest.")
        self.monitor_op = np.less if direction == "min" else np.greater
        # Keras' convention: min_delta is negated for 'min'; from its magnitude, so a second call keeps the sign
        self.min_delta = -abs(self.min_delta) if self.monitor_op is np.less else abs(self.min_delta)

    def on_train_begin(self, logs=None):
        """Resolve the direction (``mode='auto'``) before the first step: a monitor whose direction cannot be
        told raises ``ValueError`` now, not after an epoch of training (Keras waits for the first epoch's end).
        The model's compiled metrics are built by then."""
        self._set_monitor_op()

    def _is_improvement(self, value, reference):
        """Whether ``value`` beats ``reference`` by more than ``min_delta`` (anything finite beats ``None``).

        A NaN or infinite ``value`` never does (Keras takes a first NaN as the best): a NaN best would make
        every later comparison false, so e.g. a ``ModelCheckpoint`` shown a refused step's ``loss = nan`` as
        its first batch would never save again, in this fit or the next.
        """
        if not np.isfinite(value):
            return False
        if reference is None:
            return True
        return bool(self.monitor_op(value - self.min_delta, reference))


class EarlyStopping(MonitorCallback):
    """Stop training when ``monitor`` has stopped improving (Keras' ``EarlyStopping``, same rules).

    Parameters
    ----------
    monitor : str, default 'val_loss'
    min_delta : float >= 0, default 0
        A change smaller than this is no improvement.
    patience : int >= 0, default 0
        Epochs with no improvement after which training stops.
    verbose : int >= 0 or bool, default 0
    mode : {'auto', 'min', 'max'}, default 'auto'
    baseline : float, optional
        Training stops if the quantity does not improve on this (patience still applies).
    restore_best_weights : bool, default False
        At the end, put back the weights of the best epoch (as Keras: only when a best epoch was seen).
    start_from_epoch : int >= 0, default 0
        Epochs to wait before watching (a warm-up).

    Every argument is checked here: a bad one raises ``ValueError`` naming it (see :class:`MonitorCallback`).

    Attributes
    ----------
    stopped_epoch : int
        The epoch (0-based) at which training was stopped; 0 if it was not.
    best, best_epoch, wait
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta=min_delta)
        self.patience = _number(self, "patience", patience, low=0, integer=True)
        self.verbose = _verbose(self, verbose)
        self.baseline = _optional_number(self, "baseline", baseline)
        self.wait = 0
        self.stopped_epoch = 0
        self.restore_best_weights = _flag(self, "restore_best_weights", restore_best_weights)
        self.best_weights = None
        self.start_from_epoch = _number(self, "start_from_epoch", start_from_epoch, low=0, integer=True)
        self.best_epoch = 0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0 and self.chief:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0 and self.chief:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                          f"Available metrics are: {','.join(list((logs or {}).keys()))}", stacklevel=2)
        return value


class ModelCheckpoint(MonitorCallback):
    """Save the model at the end of every epoch, or only when ``monitor`` improved (Keras' ``ModelCheckpoint``).

    Parameters
    ----------
    filepath : str or os.PathLike
        May hold format fields: ``{epoch}`` (1 for the first epoch), ``{batch}`` (with an integer
        ``save_freq``, 1 for the first batch) and any key of the epoch's logs, e.g.
        ``'ckpt/weights-{epoch:02d}-{val_loss:.3f}.weights.npz'``. ``epoch`` and ``batch`` are always the
        callback's own counts, also when the logs hold an ``epoch`` (as a :class:`~tinynet.training.Trainer`'s
        do). Missing folders are created. A template that can never be filled (malformed braces, a positional
        field, a bad conversion, a format spec the integer epoch or batch does not take, a ``val_`` key with an
        integer ``save_freq``) raises ``ValueError`` here.
    monitor : str, default 'val_loss'
    verbose : int >= 0 or bool, default 0
    save_best_only : bool, default False
        Save only when ``monitor`` improved on the best value so far (a missing value saves, with a warning).
    save_weights_only : bool, default False
        True: the weights as an ``.npz`` file (:meth:`tinynet.Model.save_weights`; the path must end in
        ``.npz``; load with ``model.load_weights``). False: the whole training state as a checkpoint folder
        (:func:`tinynet.checkpoint.save`: weights, optimizer state, epoch, history and every random state;
        continue with ``tinynet.checkpoint.load(path, model)`` on the compiled model, then
        ``fit(..., initial_epoch=epoch)``). The model must be compiled (or trained by a Trainer) for that.
    mode : {'auto', 'min', 'max'}, default 'auto'
    save_freq : 'epoch' or int, default 'epoch'
        An integer saves every that many batches (``{epoch}`` then is the epoch in progress).
    initial_value_threshold : float, optional
        The "best" value to beat at first (with ``save_best_only``).

    Every argument is checked here (a bad one raises ``ValueError`` naming it), and at the start of training,
    before the first step, that the folder ``filepath`` goes in can be written (or, where it is missing, made):
    an ``OSError`` names the callback and the path otherwise. Every write is atomic (:mod:`tinynet.fileio`): a
    kill mid-save leaves the previous file or checkpoint whole. Under a :class:`~tinynet.training.Trainer`
    the whole state saved is the trainer's (resume with ``tinynet.checkpoint.load(path, trainer)``). In
    data-parallel training only rank 0 saves (every rank holds the same weights and state).
    """

    chief_only = True

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode, _optional_number(self, "initial_value_threshold", initial_value_threshold))
        self.verbose = _verbose(self, verbose)
        self.filepath = _path(self, "filepath", filepath)
        self.save_best_only = _flag(self, "save_best_only", save_best_only)
        self.save_weights_only = save_weights_only = _flag(self, "save_weights_only", save_weights_only)
        self.save_freq = save_freq
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = None
        self._current_epoch = 0
        if save_freq != "epoch" and (isinstance(save_freq, (bool, np.bool_)) or
                                     not isinstance(save_freq, (int, np.integer)) or save_freq < 1):
            raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch' or an integer >= 1, got {save_freq!r}")
        self._check_format_fields()
        if save_weights_only and not self.filepath.endswith(".npz"):
            raise ValueError(f"When using save_weights_only=True in ModelCheckpoint, the filepath must end in .npz "
                             f"(tinynet's weights format, e.g. '.weights.npz'). Received: filepath={self.filepath}")
        if not save_weights_only and self.filepath.endswith((".npz", ".keras", ".h5")):
            raise ValueError(f"ModelCheckpoint with save_weights_only=False saves the whole training state as a "
                             f"checkpoint folder (tinynet.checkpoint); give a folder path, not a file ending in "
                             f"{os.path.splitext(self.filepath)[1]}. Received: filepath={self.filepath}")

    def _check_format_fields(self):
        """Raise ``ValueError`` for a ``filepath`` that no logs can fill: malformed braces, a positional field
        (``{}``, ``{0}``; fields are filled by name only), a conversion other than ``!r``, ``!s``, ``!a``, a
        ``val_`` key with an integer ``save_freq`` (a batch's logs hold no validation values), or a format spec
        that the integer ``{epoch}`` / ``{batch}`` does not take (``{epoch:.2q}``). The log keys'
        values are known only in training, so their specs are not checked here (nor ``{batch}`` with
        ``save_freq='epoch'``, which, as in Keras, a ``batch`` key of the logs fills)."""
        try:
            fields = [(name, spec, conversion) for _, name, spec, conversion in
                      string.Formatter().parse(self.filepath) if name is not None]
        except ValueError as error:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} is not a valid format string "
                             f"({error}); write a literal brace as '{{{{' or '}}}}'") from None
        for name, spec, conversion in fields:
            root = name.split(".")[0].split("[")[0]
            if not name or root.isdigit():
                raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} has a positional field "
                                 f"('{{{name}}}'); name the field: {{epoch}}, {{batch}} or a key of the logs")
            if conversion not in (None, "r", "s", "a"):
                raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r}: field {{{name}}} has the unknown "
                                 f"conversion '!{conversion}' (Python takes !r, !s and !a)")
            if root.startswith("val_") and self.save_freq != "epoch":
                raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} has the field {{{name}}}, but with "
                                 f"save_freq={self.save_freq!r} it is filled from a batch's logs, which hold no "
                                 f"validation values (validation runs at the end of an epoch); use "
                                 f"save_freq='epoch' or a training key such as {{{root[4:]}}}")
            if name in ("epoch", "batch") and conversion is None and "{" not in spec:
                try:
                    format(1, spec)
                except ValueError as error:
                    raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r}: field {{{name}:{spec}}} is "
                                     f"not a format for the integer {name} ({error})") from None

    def _static_folder(self):
        """The part of the destination folder that no format field changes."""
        static = self.filepath.split("{", 1)[0]
        if "{" not in self.filepath and not self.save_weights_only:
            return static  # the checkpoint folder itself
        return os.path.dirname(static)

    def on_train_begin(self, logs=None):
        """Check, before the first step, that the checkpoint or weights file can be written."""
        fixed = "{" not in self.filepath
        if fixed and self.save_weights_only and os.path.isdir(self.filepath):
            raise IsADirectoryError(f"ModelCheckpoint: cannot write the weights file {self.filepath!r}: it is a "
                                    f"folder")
        if fixed and not self.save_weights_only and os.path.lexists(self.filepath) \
                and not os.path.isdir(self.filepath):
            raise NotADirectoryError(f"ModelCheckpoint: cannot save a checkpoint folder at {self.filepath!r}: it "
                                     f"is a file")
        _check_writable(self, self.filepath, self._static_folder(), make_folders=True)
        super().on_train_begin(logs)

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save_model(self._current_epoch, batch, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        if self.save_freq == "epoch":
            self._save_model(epoch, None, logs)

    def _should_save_on_batch(self, batch):
        if self.save_freq == "epoch":
            return False
        if self._last_batch_seen is None or batch <= self._last_batch_seen:
            add = batch + 1
        else:
            add = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += add
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _should_save(self, epoch, logs, path):
        if not self.save_best_only:
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: saving model to {path}")
            return True
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor} available.", stacklevel=2)
            return True
        if self.monitor_op is None:
            self._set_monitor_op()
        best = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to {current:.5f}, saving model "
                      f"to {path}")
            self.best = current
            return True
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}")
        return False

    def _file_path(self, epoch, batch, logs):
        """``filepath`` filled from the logs, with the callback's own ``epoch`` (and ``batch``) winning over
        log keys of those names (a Trainer logs a 1-based ``epoch``)."""
        fields = dict(logs or {})
        fields["epoch"] = epoch + 1
        if batch is not None:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as error:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". Reason: {error}') from None

    def _save_model(self, epoch, batch, logs):
        path = self._file_path(epoch, batch, logs)
        if not self._should_save(epoch, logs, path):
            return
        if self.save_weights_only:
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self.model.save_weights(path)
        else:
            from . import checkpoint

            # the training loop running now (a Trainer's model is not compiled), else the compiled model's run;
            # checkpoint.save makes the missing folders itself, after its checks
            running = getattr(self.model, "running_engine", None)
            checkpoint.save(path, running if running is not None else self.model)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {path}")


# ------------------------------------------------------------------------------------------ learning rate
def _optimizer(callback):
    optimizer = getattr(callback.model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "learning_rate"):
        raise ValueError(f"{type(callback).__name__}: the model has no optimizer with a learning_rate (compile the "
                         f"model first)")
    return optimizer


def _takes_one_argument(schedule):
    """Whether ``schedule`` is Keras' older form ``schedule(epoch)``.

    Returns
    -------
    bool or None
        True when it cannot take ``(epoch, lr)`` but can take ``(epoch)``; False when it takes ``(epoch, lr)``;
        None when its signature cannot be read (a built-in, some C callables).

    Raises
    ------
    ValueError
        When its signature takes neither.
    """
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(0, 0.1)
        return False
    except TypeError:
        pass
    try:
        signature.bind(0)
        return True
    except TypeError:
        raise ValueError(f"LearningRateScheduler: schedule must take (epoch, lr) or (epoch), got {schedule!r} "
                         f"with the signature {signature}") from None


def _settable_rate(callback):
    """Before training: raise ``TypeError`` naming ``callback`` when the optimizer's rate is a per-step schedule,
    which a callback cannot set (the optimizer would refuse it only once the callback tries, mid-training)."""
    schedule = getattr(_optimizer(callback), "learning_rate_schedule", None)
    if schedule is not None:
        raise TypeError(f"{type(callback).__name__}: the optimizer was built with a learning rate schedule "
                        f"({schedule!r}), so this callback cannot set its learning rate; build the optimizer with a "
                        f"float learning_rate")


class LearningRateScheduler(Callback):
    """At each epoch's start, set the learning rate to ``schedule(epoch, lr)`` (Keras' ``LearningRateScheduler``).

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> new lr`` (epoch 0-based, ``lr`` the current rate); ``schedule(epoch)`` is
        accepted too, as in Keras. A per-epoch :class:`tinynet.optimizers.schedules.Schedule` works as it is.
    verbose : int >= 0 or bool, default 0

    It also logs ``learning_rate`` at each epoch's end (so the history has it, as in Keras). A ``schedule``
    that is not callable or takes neither ``(epoch, lr)`` nor ``(epoch)``, or a bad ``verbose``, raises
    ``ValueError`` here; an optimizer whose rate is a per-step schedule raises ``TypeError`` in
    ``on_train_begin``, before the first step. Which form the schedule takes is read from its signature, so a
    ``TypeError`` raised inside a two-argument schedule reaches the caller as it is (Keras retries it as
    ``schedule(epoch)`` and reports a missing argument instead).
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"LearningRateScheduler: schedule must be a callable schedule(epoch, lr) -> new rate, "
                             f"got {schedule!r}")
        self.schedule = schedule
        self.verbose = _verbose(self, verbose)
        self._one_argument = _takes_one_argument(schedule)

    def on_train_begin(self, logs=None):
        """Refuse, before the first step, an optimizer whose rate is a per-step schedule (``TypeError``)."""
        _settable_rate(self)

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = _optimizer(self)
        if self._one_argument:  # schedule(epoch), Keras' older form
            lr = self.schedule(epoch)
        elif self._one_argument is None:  # no signature to read: Keras' way, try both
            try:
                lr = self.schedule(epoch, float(optimizer.learning_rate))
            except TypeError:
                lr = self.schedule(epoch)
        else:  # a TypeError raised inside the schedule is the user's, not a sign of the older form
            lr = self.schedule(epoch, float(optimizer.learning_rate))
        if isinstance(lr, bool) or not isinstance(lr, (float, int, np.floating, np.integer)):
            raise ValueError(f"The output of the schedule function should be a float. Got: {lr!r}")
        optimizer.learning_rate = float(lr)
        if self.verbose > 0 and self.chief:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(_optimizer(self).learning_rate)


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has stalled (Keras' ``ReduceLROnPlateau``).

    Parameters
    ----------
    monitor : str, default 'val_loss'
    factor : float in (0, 1), default 0.1
    patience : int >= 0, default 10
        Epochs with no improvement before the rate is reduced.
    verbose : int >= 0 or bool, default 0
    mode : {'auto', 'min', 'max'}, default 'auto'
    min_delta : float >= 0, default 1e-4
    cooldown : int >= 0, default 0
        Epochs to wait after a reduction before counting again.
    min_lr : float >= 0, default 0
        The rate never goes below this.

    It logs ``learning_rate`` at each epoch's end (before deciding), as Keras. Every argument is checked
    here: a bad one raises ``ValueError`` naming it (see :class:`MonitorCallback`). An optimizer whose rate is
    a per-step schedule (which this callback cannot set) raises ``TypeError`` in ``on_train_begin``, before the
    first step.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta=min_delta)
        factor = _number(self, "factor", factor, low=0, low_open=True)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1 (ReduceLROnPlateau does not support a factor "
                             f">= 1.0), got {factor!r}")
        self.factor = factor
        self.min_lr = _number(self, "min_lr", min_lr, low=0)
        self.patience = _number(self, "patience", patience, low=0, integer=True)
        self.verbose = _verbose(self, verbose)
        self.cooldown = _number(self, "cooldown", cooldown, low=0, integer=True)
        self.cooldown_counter = 0
        self.wait = 0

    def _reset(self):
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        _settable_rate(self)
        self._reset()

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        logs = logs if logs is not None else {}
        optimizer = _optimizer(self)
        logs["learning_rate"] = float(optimizer.learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(list(logs.keys()))}.", stacklevel=2)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old = float(optimizer.learning_rate)
                if old > np.float32(self.min_lr):
                    new = max(old * self.factor, self.min_lr)
                    optimizer.learning_rate = new
                    if self.verbose > 0 and self.chief:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


# ------------------------------------------------------------------------------------------ logging
class CSVLogger(Callback):
    """One row per epoch in a CSV file (Keras' ``CSVLogger``: same columns, order and formatting).

    Parameters
    ----------
    filename : str or os.PathLike
        Its folder must exist.
    separator : str, default ','
        One character, not a quote (``"``) or a line break.
    append : bool, default False
        Keep the file's rows and add to them (no second header), e.g. when training continues.

    The columns are ``epoch`` (0-based) and the first epoch's log keys but ``epoch`` (a Trainer logs a 1-based
    one), sorted (with ``val_`` twins when there is no validation, as Keras). The arguments are checked here
    (``ValueError`` naming the bad one), and at the start of training, before the first step, that the file
    can be written (an ``OSError`` names the callback and the path: a folder, a FIFO or a device is refused) and,
    with ``append``, that the file to keep is a regular UTF-8 file (else ``OSError`` / ``ValueError`` naming it;
    a last row without a line break gets one). The file is first written at the end of
    the first epoch (so a run that fails before leaves no empty file; Keras creates it at the start), then
    rewritten whole every epoch through :func:`tinynet.fileio.write_text` (a temporary file, then an atomic
    rename), so it is never half-written. Rank 0 only in data-parallel training.
    """

    chief_only = True

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        if not isinstance(separator, str) or len(separator) != 1 or separator in '"\r\n':
            raise ValueError(f"CSVLogger: separator must be one character other than a quote (\") or a line break, "
                             f"got {separator!r}")
        self.sep = separator
        self.filename = _path(self, "filename", filename)
        self.append = _flag(self, "append", append)
        self.keys = None
        self.text = ""
        self.append_header = True

        class Dialect(csv.excel):
            delimiter = separator

        self._dialect = Dialect

    def on_train_begin(self, logs=None):
        if os.path.isdir(self.filename):
            raise IsADirectoryError(f"CSVLogger: cannot write {self.filename!r}: it is a folder")
        _check_writable(self, self.filename, os.path.dirname(self.filename), make_folders=False)
        if os.path.lexists(self.filename) and not os.path.islink(self.filename) \
                and not stat.S_ISREG(os.lstat(self.filename).st_mode):
            kind = fileio.file_kind(os.lstat(self.filename).st_mode)
            raise OSError(errno.EINVAL, f"CSVLogger: cannot write {self.filename!r}: it is {kind}, not a regular "
                                        f"file (the log is written to a temporary file renamed over it)")
        self.text, self.append_header = "", True
        if self.append and os.path.exists(self.filename):
            self.text = self._read_existing()
            self.append_header = not self.text.split("\n", 1)[0]
            if self.text and not self.text.endswith(("\n", "\r")):  # the first new row must start a line
                self.text += "\r\n" if "\r\n" in self.text else "\n"
        self.keys = None

    def _read_existing(self) -> str:
        """The text of the file to append to: a regular file (a FIFO or a device raises ``OSError`` before a byte is
        read), UTF-8 (else ``ValueError``); each error names the callback and the file."""
        try:
            with fileio.open_regular(self.filename) as f:
                raw = f.read()
        except fileio.FileFormatError as error:
            if not os.path.exists(self.filename):
                raise FileNotFoundError(errno.ENOENT, f"CSVLogger: cannot append to {self.filename!r}: {error}") \
                    from None
            raise OSError(errno.EINVAL, f"CSVLogger: cannot append to {self.filename!r}: {error}") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"CSVLogger: cannot append to {self.filename!r}: it is not UTF-8 text (byte "
                             f"{error.start}: {error.reason}); append=True adds rows to a CSV file this callback "
                             f"wrote") from None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}

        def value(v):
            if isinstance(v, str):
                return v
            if isinstance(v, (list, tuple, np.ndarray)) and np.ndim(v) > 0:
                return f'"[{", ".join(map(str, v))}]"'
            return v

        buffer = io.StringIO()
        if self.keys is None:
            self.keys = sorted(k for k in logs if k != "epoch")  # the callback writes its own epoch column
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys.extend([f"val_{k}" for k in self.keys])
            writer = csv.DictWriter(buffer, fieldnames=["epoch"] + self.keys, dialect=self._dialect)
            if self.append_header:
                writer.writeheader()
        writer = csv.DictWriter(buffer, fieldnames=["epoch"] + self.keys, dialect=self._dialect)
        row = {"epoch": epoch}
        row.update((k, value(logs.get(k, "NA"))) for k in self.keys)
        writer.writerow(row)
        self.text += buffer.getvalue()
        fileio.write_text(self.filename, self.text)


class TerminateOnNaN(Callback):
    """Stop training when the loss is NaN or infinite (Keras' ``TerminateOnNaN``).

    Parameters
    ----------
    raise_error : bool, default False
        True: raise ``RuntimeError`` at once instead of stopping quietly.

    With tinynet's loop the bad step is never applied: the loop reports the batch with ``loss = nan``, this
    callback sets ``model.stop_training``, and ``fit`` returns instead of raising
    :class:`tinynet.training.TrainingDiverged`.
    """

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = _flag(self, "raise_error", raise_error)

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and (math.isnan(loss) or math.isinf(loss)):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                                   f"Terminating training immediately.")
            if self.chief:
                print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from functions: ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``,
    ``on_train_begin(logs)``, ``on_train_end(logs)``, ``on_train_batch_begin(batch, logs)``,
    ``on_train_batch_end(batch, logs)`` (Keras' ``LambdaCallback``). Other hooks may be given by keyword
    (``on_test_begin=...``), as in Keras; a keyword starting with ``on_`` that names no hook (a misspelling such
    as ``on_epoch_ends``), or a hook that is not a function, raises ``ValueError``."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        for name, fn in kwargs.items():  # Keras sets these as attributes: an ``on_...`` one must be a real hook
            if name.startswith("on_") and not callable(getattr(Callback, name, None)):
                hooks = sorted(n for n in vars(Callback) if n.startswith("on_"))
                raise ValueError(f"LambdaCallback: {name} is not a callback hook (a misspelt one would never be "
                                 f"called); the hooks are {', '.join(hooks)}")
            if name.startswith("on_") and fn is not None and not callable(fn):
                raise ValueError(f"LambdaCallback: {name} must be a function or None, got {fn!r}")
        self.__dict__.update({name: fn for name, fn in kwargs.items() if not (name.startswith("on_") and fn is None)})
        hooks = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end, "on_train_begin": on_train_begin,
                 "on_train_end": on_train_end, "on_train_batch_begin": on_train_batch_begin,
                 "on_train_batch_end": on_train_batch_end}
        for name, fn in hooks.items():  # all checked before any is set
            if fn is not None and not callable(fn):
                raise ValueError(f"LambdaCallback: {name} must be a function or None, got {fn!r}")
        for name, fn in hooks.items():
            if fn is not None:
                setattr(self, name, fn)


__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "MonitorCallback", "EarlyStopping",
           "ModelCheckpoint", "LearningRateScheduler", "ReduceLROnPlateau", "CSVLogger", "TerminateOnNaN",
           "LambdaCallback", "monitor_direction"]
