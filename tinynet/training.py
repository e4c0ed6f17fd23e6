"""The trainer: GoogLeNet's training recipe (aux-weighted loss, per-epoch schedule, augmentation, checkpoints)
on tinynet's one training loop (:class:`tinynet.engine.Engine`, the loop behind ``Model.fit`` too).

One step on a batch ``(x, y)`` of a model with outputs ``[aux1, aux2, main]``:

.. math:: L = w_{aux} L_{aux1} + w_{aux} L_{aux2} + L_{main}, \\qquad w_{aux} = 0.3 \\text{ (the paper)}

then ``model.backward(∂L/∂outputs)`` and ``optimizer.step()``. Evaluation reads the main (last) output only:
the aux heads are a training device. Everything random (shuffling, augmentation, Dropout, the global
generator) is a seeded NumPy generator whose state a checkpoint saves, so a run is repeatable on CPU and
a resumed run matches an uninterrupted one bit for bit (see :mod:`tinynet.checkpoint`).

What the trainer adds to the engine: :class:`tinynet.data.Dataset` in and out, labels as class indices for
every head, a per-epoch learning-rate schedule set before every step, the history's names (``loss``,
``loss_<head>``, ``acc``, ``val_loss``, ``val_acc``, ``val_top5``, ``lr``, ``epoch``, ``time``), its progress
line, a checkpoint after every epoch, and the gradient-norm experiment. Keras callbacks work with it too
(``fit(..., callbacks=[EarlyStopping(monitor='val_acc')])``).

Examples
--------
>>> trainer = Trainer(model, SGD(0.05, momentum=0.9), schedule=StepDecay(0.05), preprocess=Normalizer.fit(x))
>>> history = trainer.fit(train, test, epochs=10)
>>> trainer.evaluate(test)['top1']
"""
from __future__ import annotations

import json

import numpy as np

from . import backend, losses
from . import callbacks as callbacks_module
from .engine import Engine, TrainingDiverged, check_number
from .engine import check_callbacks
from .grad_norms import GradNormRecorder, grad_norm_table, group_grad_norms, layer_groups  # noqa: F401 (re-exported)
from .metrics import SparseCategoricalAccuracy
from .optimizers.schedules import get_schedule
from .plots import plot_grad_norms, plot_history  # noqa: F401 (re-exported)


def _check_number(name, value, low=None, high=None, integer=False, low_open=False):
    """Raise ``ValueError`` ``'Trainer: <name> must be ...'`` unless ``value`` is a finite number in the range."""
    return check_number("Trainer", name, value, low=low, high=high, integer=integer, low_open=low_open)


def _optimizer_argument(optimizer):
    """An :class:`~tinynet.optimizers.Optimizer`, or one built from its name (``'adam'``, ``'sgd'``), as
    ``compile`` takes it; anything else raises naming what it takes."""
    from . import optimizers

    try:
        return optimizers.get(optimizer)
    except ValueError as error:
        raise TypeError(f"Trainer: optimizer: {error}") from None


#: callbacks that set the learning rate themselves (a per-step schedule of the trainer would undo them)
RATE_CALLBACKS = (callbacks_module.LearningRateScheduler, callbacks_module.ReduceLROnPlateau)


def _check_checkpoint_config(config):
    """Raise ``ValueError`` naming ``checkpoint_config`` unless it is None or a dict that JSON can write (as
    :func:`tinynet.checkpoint.save` will, with no NaN or inf; :func:`tinynet.checkpoint.load` takes a dict only)."""
    if config is None:
        return
    if not isinstance(config, dict):
        raise ValueError(f"Trainer.fit: checkpoint_config must be a dict (JSON-able), got {type(config).__name__}")
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"Trainer.fit: checkpoint_config is not JSON-able ({error}); no checkpoint could be "
                         f"saved with it") from None


def head_names(model):
    """Short names for the outputs: ``'aux1'``, ``'aux2'`` (the layer name without ``_output``), ``'main'`` last."""
    names = []
    for i, t in enumerate(model.outputs):
        if i == len(model.outputs) - 1:
            names.append("main")
        else:
            names.append(t.name[:-len("_output")] if t.name.endswith("_output") else t.name)
    return names


def topk_accuracy(probs, labels, k=1) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (ties broken by index order)."""
    probs = backend.to_numpy(probs).reshape(len(labels), -1)
    labels = np.asarray(labels)
    if k == 1:
        return float((probs.argmax(axis=1) == labels).mean())
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


class _Progress(callbacks_module.Callback):
    """The trainer's display: a tqdm bar per epoch (loss, per-head losses, acc), then one line per epoch."""

    chief_only = True

    def __init__(self, trainer, epochs, steps):
        super().__init__()
        self.trainer, self.epochs, self.steps, self.bar = trainer, epochs, steps, None

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}", unit="batch", disable=not self.trainer.verbose,
                        leave=False, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        heads = self.trainer.heads
        postfix = {"loss": f"{logs['loss']:.3f}"}
        if len(heads) > 1:
            postfix.update({h: f"{logs[f'loss_{h}']:.3f}" for h in heads})
        postfix["acc"] = f"{logs['acc']:.3f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, epoch, logs=None):
        self.close()
        if self.trainer.verbose:
            from tqdm.auto import tqdm

            tqdm.write(self.trainer.epoch_line(logs, self.epochs))


class _Checkpointer(callbacks_module.Callback):
    """Saves the trainer's checkpoint after every epoch (after the history has the epoch); on rank 0 only in
    data-parallel training, so a checkpoint is never written by several processes."""

    chief_only = True

    def __init__(self, trainer, directory, config):
        super().__init__()
        self.trainer, self.directory, self.config = trainer, directory, config

    def on_epoch_end(self, epoch, logs=None):
        from . import checkpoint

        checkpoint.save(self.directory, self.trainer, config=self.config)


class Trainer(Engine):
    """Trains a tinynet model whose last output is the main classifier and earlier outputs are aux heads.

    A thin layer on :class:`tinynet.engine.Engine`: the batches, the loss, the reliability checks, the epochs
    and the callbacks are the engine's, shared with :meth:`tinynet.Model.fit`.

    Parameters
    ----------
    model : tinynet.Model
        Outputs are softmax probabilities; the last one is the main head.
    optimizer : tinynet.optimizers.Optimizer
        Attached to the model here (so its state follows ``model.to``).
    schedule : tinynet.optimizers.schedules.Schedule, optional
        Learning rate per (fractional) epoch, set before every step; default: none, the optimizer's own rate (a
        number, which callbacks such as ``ReduceLROnPlateau`` may change, or its per-step schedule).
    aux_weight : float, default 0.3
        Loss weight of every output but the last (the paper's 0.3); ``loss_weights`` overrides it.
    loss_weights : list of float, optional
        One per output, in the model's order (a list, tuple or 1-D array; anything else raises ``ValueError``).
    batch_size : int, default 64
    preprocess : callable, optional
        Applied to each batch after augmentation (e.g. :class:`tinynet.data.Normalizer`).
    augment : callable ``(x, rng) -> x``, optional
        Training-time augmentation (e.g. :class:`tinynet.data.Augment`).
    seed : int, default 0
        Seeds the generator for shuffling and augmentation.
    verbose : bool, default True
        Show a tqdm progress bar and one line per epoch.
    grad_norm_groups : list of (name, prefixes), optional
        Record, every ``grad_norm_every`` steps, the gradient norm of each group of layers twice at the same
        weights: from the full loss (with the aux heads) and from the main loss alone (as without them).
    grad_norm_every : int, default 5
    distributed : bool, tinynet.distributed.Communicator or mpi4py communicator, default False
        Train data-parallel over the processes of an MPI job (``mpiexec -n N python script.py``): True uses
        every process. ``batch_size`` is then the global batch, split over the ranks each step; each step
        all-reduces the gradients once; only rank 0 prints and writes checkpoints; evaluation runs on one
        shard per rank. Dropout masks and augmentation are drawn per global batch, so with
        ``BatchNormalization(synchronized=True)`` (or no BatchNormalization) N ranks train as one process
        does, up to rounding. See :mod:`tinynet.distributed`.
    communicator : tinynet.distributed.Communicator, optional
        The same as ``distributed=communicator``.
    label_smoothing : float in [0, 1], default 0
        Every head's targets become ``t · (1 − s) + s / C`` (:func:`tinynet.losses.smooth_targets`), as Keras'
        ``CategoricalCrossentropy(label_smoothing=s)``; Inception v3 trains with 0.1. The loss of
        :meth:`evaluate` and of the validation data is this loss too (as Keras reports it); the accuracy
        metrics read the predictions alone, as without it.

    Attributes
    ----------
    epoch : int
        Epochs completed.
    history : dict of lists
        Per epoch: ``epoch, lr, time, loss, loss_<head>, acc`` and, with validation data, ``val_loss, val_acc``
        (``val_top5`` with more than 5 classes).
    grad_norms : dict
        ``{'step': [...], 'with_aux': {group: [...]}, 'main_only': {group: [...]}}`` when recording.
    """

    def __init__(self, model, optimizer, schedule=None, aux_weight=0.3, loss_weights=None, batch_size=64,
                 preprocess=None, augment=None, seed=0, verbose=True, grad_norm_groups=None, grad_norm_every=5,
                 distributed=False, communicator=None, label_smoothing=0.0):
        from .model import Model

        if not isinstance(model, Model):
            raise TypeError(f"Trainer: model must be a tinynet.Model, got {type(model).__name__}")
        optimizer = _optimizer_argument(optimizer)
        for name, value in (("preprocess", preprocess), ("augment", augment)):
            if value is not None and not callable(value):
                raise TypeError(f"Trainer: {name} must be a callable (e.g. tinynet.data."
                                f"{'Normalizer' if name == 'preprocess' else 'Augment'}) or None, got "
                                f"{type(value).__name__}")
        seed = _check_number("seed", seed, low=0, integer=True)
        if not isinstance(verbose, (bool, np.bool_)) and verbose not in (0, 1):
            raise ValueError(f"Trainer: verbose must be True or False, got {verbose!r}")
        n_out = len(model.outputs)
        if loss_weights is None:
            loss_weights = [_check_number("aux_weight", aux_weight, low=0)] * (n_out - 1) + [1.0]
        elif not isinstance(loss_weights, (list, tuple, np.ndarray)) or np.ndim(loss_weights) != 1:
            raise ValueError(f"Trainer: loss_weights must be a list of {n_out} numbers, one per output in the "
                             f"model's order (the last is the main head), got {loss_weights!r}")
        loss_weights = [_check_number("loss_weights", w, low=0) for w in loss_weights]
        if len(loss_weights) != n_out:
            raise ValueError(f"Trainer: {n_out} outputs but {len(loss_weights)} loss weights")
        batch_size = _check_number("batch_size", batch_size, low=1, integer=True)
        grad_norm_every = _check_number("grad_norm_every", grad_norm_every, low=1, integer=True)
        if schedule is not None:
            if optimizer.learning_rate_schedule is not None:
                raise ValueError("Trainer: the optimizer was built with a learning rate schedule; give no "
                                 "schedule to the trainer as well")
            try:
                schedule = get_schedule(schedule)
            except (TypeError, ValueError) as error:
                raise type(error)(f"Trainer: schedule: {error}") from None
        heads = head_names(model)
        recorder = GradNormRecorder(model, grad_norm_groups, grad_norm_every) if grad_norm_groups else None
        self.label_smoothing = float(_check_number("label_smoothing", label_smoothing, low=0, high=1))
        cce = losses.LossFunctionWrapper(self._loss, name="categorical_crossentropy")
        metrics = [[] for _ in range(n_out - 1)] + [[("acc", SparseCategoricalAccuracy("acc"))]]
        super().__init__(model, optimizer, [cce] * n_out, loss_weights, metrics, [f"loss_{h}" for h in heads],
                         schedule=schedule, batch_size=batch_size, preprocess=preprocess, augment=augment,
                         rng=np.random.default_rng(seed), grad_recorder=recorder)
        self.heads = heads
        self.output_labels = heads
        self.verbose = bool(verbose)
        self.grad_norm_every = grad_norm_every
        if distributed or communicator is not None:
            from . import distributed as distributed_module

            self.set_communicator(distributed_module.get_communicator(distributed, communicator))

    def _loss(self, probs, labels):
        """Every head's loss: the categorical cross-entropy with this trainer's label smoothing."""
        return losses.categorical_crossentropy(probs, labels, label_smoothing=self.label_smoothing)

    # ------------------------------------------------------------------ one batch
    def train_step(self, x, y, lr):
        """Forward, weighted loss, backward and one optimizer step on a batch (see
        :meth:`tinynet.engine.Engine.train_batch`).

        Returns
        -------
        total : float, losses : list of float (one per head, unweighted), correct : int (main head, top-1)
        """
        if len(y) == 0 or len(x) != len(y):
            raise ValueError(f"Trainer.train_step: a batch needs images and as many labels, got {len(x)} images "
                             f"and {len(y)} labels")
        total, values, outs, _ = self.train_batch([x], [y] * len(self.heads), lr)
        pred = backend.to_numpy(outs[-1]).reshape(len(y), -1).argmax(axis=1)
        return total, values, int((pred == np.asarray(y)).sum())

    # ------------------------------------------------------------------ epochs
    def _trainer_logs(self, logs):
        """The engine's logs under the trainer's history names (``lr`` first, as before)."""
        out = {"lr": self.last_lr, "loss": logs["loss"], "acc": logs["acc"]}
        out.update({f"loss_{h}": logs[f"loss_{h}"] for h in self.heads})
        return out

    def train_epoch(self, train):
        """One pass over ``train`` (a :class:`tinynet.data.Dataset`) in a shuffled order; returns its metrics
        (``lr``, ``loss``, ``acc``, ``loss_<head>``). A ``model.stop_training`` left set by an earlier ``fit``
        (e.g. by ``EarlyStopping``) is cleared first, so the whole epoch runs."""
        self.model.stop_training = False  # else the loop would stop after the first batch
        progress = _Progress(self, None, -(-len(train) // self.batch_size))
        progress.on_epoch_begin(self.epoch)
        try:
            logs = self.run_epoch([train.x], [train.y] * len(self.heads), self.epoch, self.batch_size,
                                  callbacks=callbacks_module.CallbackList([progress]))
        finally:
            progress.close()
        return self._trainer_logs(logs)

    def evaluate(self, dataset, batch_size=None):
        """Loss and accuracy of the main (last) output on ``dataset``; aux heads are ignored.

        Returns
        -------
        dict with ``loss``, ``top1`` and, when there are more than 5 classes, ``top5``. In data-parallel training
        each rank evaluates a contiguous shard and the sums are added, so every rank returns the whole set's
        values.
        """
        self.check_dataset(dataset, "evaluation")
        if self.distributed:
            return self._evaluate_on_shards(dataset, batch_size)
        probs = self.predict(dataset.x, batch_size)
        loss, _ = self._loss(probs, dataset.y)
        out = {"loss": float(loss), "top1": topk_accuracy(probs, dataset.y, 1)}
        if probs.shape[-1] > 5:
            out["top5"] = topk_accuracy(probs, dataset.y, 5)
        return out

    def _evaluate_on_shards(self, dataset, batch_size=None):
        from .distributed import shard

        n = len(dataset)
        start, stop = shard(n, self.comm.rank, self.comm.size)
        x, y = dataset.x[start:stop], np.asarray(dataset.y)[start:stop]
        top5 = int(np.prod(self.model.outputs[-1].example_shape)) > 5
        mine = [0.0, 0.0, 0.0]
        if len(y):
            probs = self.predict(x, batch_size)
            loss, _ = self._loss(probs, y)
            mine = [float(loss) * len(y), round(topk_accuracy(probs, y, 1) * len(y)),
                    round(topk_accuracy(probs, y, 5) * len(y)) if top5 else 0.0]
        sums = self.comm.sum(mine)
        out = {"loss": float(sums[0] / n), "top1": float(sums[1] / n)}
        if top5:
            out["top5"] = float(sums[2] / n)
        return out

    def predict(self, x, batch_size=None):
        """Main-head probabilities (N, classes) as a NumPy array (inference mode, preprocessing applied); an empty
        ``x`` gives an empty (0, classes) array."""
        if batch_size is not None:
            batch_size = _check_number("batch_size", batch_size, low=1, integer=True)
        if len(x) == 0:
            return np.zeros((0, int(np.prod(self.model.outputs[-1].example_shape))), dtype=self.model.outputs[-1].dtype)
        xb = self.prepare_inputs([x], training=False)[0]
        outs = self.model.predict(xb, batch_size=batch_size or max(self.batch_size, 128))
        outs = outs if isinstance(outs, list) else [outs]
        return backend.to_numpy(outs[-1]).reshape(len(x), -1)

    def check_dataset(self, dataset, what="train"):
        """Raise ``ValueError`` before training when ``dataset`` does not fit the model.

        Checks that it is not empty, that its images have the model input's shape and that its labels are
        integers in ``[0, classes)`` of the main output, naming what differs.
        """
        if not hasattr(dataset, "x") or not hasattr(dataset, "y"):
            raise TypeError(f"Trainer: the {what} set must be a tinynet.data.Dataset (images x, labels y), got "
                            f"{type(dataset).__name__}; e.g. tinynet.data.Dataset(x, y)")
        if len(dataset) == 0:
            raise ValueError(f"Trainer: the {what} set is empty")
        expected = tuple(self.model.inputs[0].example_shape)
        if tuple(dataset.x.shape[1:]) != expected:
            raise ValueError(f"Trainer: the {what} images have shape {tuple(dataset.x.shape[1:])}, the model takes "
                             f"{expected}")
        y = np.asarray(dataset.y)
        for head, output in zip(self.heads, self.model.outputs):  # every head is trained on the same labels
            classes = int(np.prod(output.example_shape))
            if y.ndim != 1 or y.dtype.kind not in "iu" or int(y.min()) < 0 or int(y.max()) >= classes:
                raise ValueError(f"Trainer: the {what} labels must be class indices in [0, {classes}) for the "
                                 f"{classes} outputs of head '{head}' ({output.name}); got dtype {y.dtype}, shape "
                                 f"{y.shape}, range {y.min()}..{y.max()}")

    def fit(self, train, val=None, epochs=10, checkpoint_dir=None, checkpoint_config=None, callbacks=None):
        """Train until ``epochs`` epochs are done in total (a resumed trainer continues from ``self.epoch``).

        Parameters
        ----------
        train, val : tinynet.data.Dataset
        epochs : int
            Total number of epochs (not additional ones).
        checkpoint_dir : str, optional
            Save a checkpoint there after every epoch (see :mod:`tinynet.checkpoint`).
        checkpoint_config : dict, optional
            JSON-able description stored with the checkpoint (e.g. how to rebuild the model). Anything but a
            dict that JSON can write (no NaN or inf) raises ``ValueError`` before training, not at the first
            checkpoint.
        callbacks : list of tinynet.callbacks.Callback, optional
            Called with the trainer's logs (``loss``, ``acc``, ``val_acc``, ...), after its own display and
            checkpoint; ``model.stop_training`` ends training after the epoch. Anything but a list or tuple of
            callbacks raises ``ValueError`` before training.

        Returns
        -------
        dict : :attr:`history`
        """
        epochs = _check_number("epochs", epochs, low=0, integer=True)
        check_callbacks("Trainer.fit", callbacks)  # one callback, not in a list, is refused by name
        self.check_dataset(train, "train")
        if val is not None:
            self.check_dataset(val, "validation")
        setting_rate = [type(cb).__name__ for cb in callbacks or [] if isinstance(cb, RATE_CALLBACKS)]
        if setting_rate and (self.schedule is not None or self.optimizer.learning_rate_schedule is not None):
            raise ValueError(f"Trainer.fit: {', '.join(setting_rate)} sets the learning rate, but this trainer's "
                             f"{'schedule' if self.schedule is not None else 'optimizer schedule'} sets it before "
                             f"every step and would undo it; build the trainer without a schedule, on an optimizer "
                             f"with a number as its learning rate")
        _check_checkpoint_config(checkpoint_config)
        if checkpoint_dir is not None:  # a folder that can never hold a checkpoint fails now, not after an epoch
            from . import checkpoint

            try:
                checkpoint.check_writable(checkpoint_dir)
            except checkpoint.CheckpointError as error:
                raise checkpoint.CheckpointError(f"Trainer.fit: checkpoint_dir {error}") from None
        steps = -(-len(train) // self.batch_size)
        progress = _Progress(self, epochs, steps)
        own = [progress] + ([_Checkpointer(self, checkpoint_dir, checkpoint_config)] if checkpoint_dir is not None
                            else [])
        cbs = callbacks_module.CallbackList(own + list(callbacks or []), model=self.model, verbose=int(self.verbose),
                                            epochs=epochs, steps=steps)

        def validate():
            return {f"val_{'acc' if k == 'top1' else k}": v for k, v in self.evaluate(val).items()}

        def extras(epoch, logs, seconds):
            renamed = self._trainer_logs(logs)
            renamed.update({k: v for k, v in logs.items() if k.startswith("val_")})
            renamed["epoch"] = epoch + 1
            renamed["time"] = seconds
            logs.clear()
            logs.update(renamed)

        try:
            self.run_epochs([train.x], [train.y] * len(self.heads), self.epoch, epochs, self.batch_size,
                            validate=validate if val is not None else None, callbacks=cbs, extras=extras)
        finally:
            progress.close()
        return self.history

    def epoch_line(self, m, epochs):
        """The one line printed after each epoch."""
        heads = " ".join(f"{h} {m[f'loss_{h}']:.3f}" for h in self.heads) if len(self.heads) > 1 else ""
        line = f"epoch {m['epoch']}/{epochs}  lr {m['lr']:.4g}  loss {m['loss']:.4f}"
        line += f" ({heads})" if heads else ""
        line += f"  acc {m['acc']:.4f}"
        if "val_acc" in m:
            line += f"  val_loss {m['val_loss']:.4f}  val_acc {m['val_acc']:.4f}"
        if "val_top5" in m:
            line += f"  val_top5 {m['val_top5']:.4f}"
        return line + f"  ({m['time']:.1f}s)"


def fit(model, optimizer, train, val=None, epochs=10, **kwargs):
    """Functional form: ``Trainer(model, optimizer, **kwargs).fit(train, val, epochs)``; returns the history."""
    return Trainer(model, optimizer, **kwargs).fit(train, val, epochs)


__all__ = ["Trainer", "TrainingDiverged", "fit", "topk_accuracy", "head_names"]
