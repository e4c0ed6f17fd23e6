"""The one training loop, shared by :meth:`tinynet.Model.fit` (Keras' API) and :class:`tinynet.training.Trainer`.

:class:`Engine` holds a training run's state (model, optimizer, per-output losses and weights, metrics,
the shuffling generator, epoch count, history) and runs it:

* :meth:`Engine.train_batch`: forward, the weighted loss :math:`L = \\sum_k w_k L_k` over the outputs that have a
  loss, backward, then the optimizer step. A non-finite loss, gradient or weight raises
  :class:`TrainingDiverged` naming the epoch, the step and the first layer that produced a non-finite value;
  the step is then not applied.
* :meth:`Engine.run_epochs`: epochs of shuffled mini-batches inside ``np.errstate`` (non-finite values are
  checked, not warned about), the callbacks' hooks, validation after each epoch, a last finiteness check of the
  weights and the logs, the history, ``model.stop_training``.
* :meth:`Engine.evaluate_arrays`: the losses and metrics in inference mode, batch by batch.

* Data parallelism (:meth:`Engine.set_communicator`, ``distributed=True``): each step is one global batch,
  split over the ranks of an MPI job; :meth:`Engine.train_global_batch` runs a rank's share and all-reduces the
  gradients (see :mod:`tinynet.distributed`). Without a communicator nothing of it runs.

The Keras front end (:func:`compile_model`, :func:`fit`, :func:`evaluate`) turns ``compile``'s arguments into an
engine and checks ``fit``'s arguments before anything runs; the trainer builds an engine with its own losses,
names and validation (see :mod:`tinynet.training`). Everything random (shuffling, augmentation, Dropout, the
global generator) is a seeded NumPy generator that a checkpoint saves, so a resumed run matches an
uninterrupted one bit for bit.
"""
from __future__ import annotations

import math
import numbers
import time

import numpy as np

from . import backend
from . import callbacks as callbacks_module
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from .checks import check_flag, check_number


class StoppedMidEpoch(Exception):
    """A callback stopped training when a step was refused (:class:`~tinynet.callbacks.TerminateOnNaN`): the
    epoch is not complete, so :meth:`Engine.run_epochs` ends training without recording it (no history entry,
    no epoch counted, no checkpoint), with ``logs`` (``loss`` NaN) passed to ``on_train_end``."""

    def __init__(self, logs):
        super().__init__("training stopped by a callback in the middle of an epoch")
        self.logs = logs


class TrainingDiverged(FloatingPointError):
    """Training met a non-finite loss, gradient or weight and stopped before using it.

    The optimizer step of the failing batch is not applied, the moving statistics its forward pass changed
    (BatchNormalization's) are put back, and no checkpoint is written from it, so the last checkpoint on disk
    is the last good state.

    Attributes
    ----------
    epoch : int
        The epoch in progress (1-based).
    step : int or None
        The step within that epoch (1-based); ``None`` when found at the end of the epoch.
    detail : str
        What was non-finite and, where it could be found, the first layer that produced it.
    """

    def __init__(self, epoch, step, detail):
        where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
        super().__init__(f"training diverged at {where}: {detail}")
        self.epoch, self.step, self.detail = epoch, step, detail


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _num_batches(n, batch_size):
    return -(-n // batch_size)


class Engine:
    """A training run: its state, and the loop (see the module notes).

    Parameters
    ----------
    model : tinynet.Model
    optimizer : tinynet.optimizers.Optimizer
        Attached to the model here (its state follows ``model.to``).
    losses : list of tinynet.losses.Loss or None
        One per output; ``None`` for an output that does not enter the loss.
    loss_weights : list of float
        One per output.
    metrics : list of list of (str, tinynet.metrics.Metric)
        Per output, the metrics with the key they are logged under.
    loss_keys : list of str or None
        Per output, the key of its (unweighted) loss in the logs; ``None``: not logged.
    schedule : tinynet.optimizers.schedules.Schedule, optional
        Per-epoch learning rate set before every step (the trainer's); ``None`` leaves the optimizer's rate.
    batch_size : int
    preprocess : callable, optional
        Applied to each batch of the (single) input after augmentation.
    augment : callable ``(x, rng) -> x``, optional
        Training-time augmentation of the (single) input.
    rng : numpy.random.Generator
        Shuffling and augmentation.
    grad_recorder : tinynet.grad_norms.GradNormRecorder, optional
    communicator : tinynet.distributed.Communicator, optional
        Train data-parallel over its ranks (see :meth:`set_communicator`).

    Attributes
    ----------
    epoch : int
        Epochs completed.
    history : dict of lists
        Each completed epoch's logs, as the loop computed them (what a checkpoint stores).
    comm : tinynet.distributed.Communicator or None
        The ranks this run trains over; ``None`` in one process.
    """

    def __init__(self, model, optimizer, losses, loss_weights, metrics, loss_keys, schedule=None, batch_size=32,
                 preprocess=None, augment=None, rng=None, grad_recorder=None, communicator=None):
        self.model = model
        self.optimizer = optimizer.attach(model)
        self.losses = list(losses)
        self.loss_weights = [float(w) for w in loss_weights]
        self.metrics = [list(m) for m in metrics]
        self.loss_keys = list(loss_keys)
        self.schedule = schedule
        self.batch_size = int(batch_size)
        self.preprocess = preprocess
        self.augment = augment
        self.rng = rng if rng is not None else np.random.default_rng(int(backend.global_rng().integers(2 ** 63)))
        self.recorder = grad_recorder
        self.epoch = 0
        self.history = {}
        self.last_lr = None
        self.output_labels = [t.name for t in model.outputs]  # how messages name the outputs
        self.loss_tracker = metrics_module.Mean("loss")
        self.output_trackers = [metrics_module.Mean(key) if key else None for key in self.loss_keys]
        self.comm = None
        self.grad_buffer = None
        if communicator is not None:
            self.set_communicator(communicator)

    # ------------------------------------------------------------------ state
    @property
    def grad_norms(self):
        """The gradient-norm record (see :class:`tinynet.grad_norms.GradNormRecorder`), or None."""
        return self.recorder.record if self.recorder is not None else None

    @grad_norms.setter
    def grad_norms(self, record):
        if self.recorder is None:
            raise ValueError(f"{type(self).__name__}: this run records no gradient norms (grad_norm_groups=None)")
        self.recorder.record = record

    @property
    def metric_objects(self):
        """Every metric object, in log order."""
        return [metric for per_output in self.metrics for _, metric in per_output]

    # ------------------------------------------------------------------ data parallelism
    def set_communicator(self, comm):
        """Train data-parallel over ``comm``'s ranks from now on, or in one process (``None``).

        With more than one rank: ``batch_size`` is the global batch, split over the ranks each step
        (:meth:`train_global_batch`); evaluation runs on one shard per rank and sums; only rank 0 shows progress
        and runs the callbacks whose ``chief_only`` is True (checkpoints, CSV logs); an uncaught exception on
        any rank ends the job (:func:`tinynet.distributed.install_abort_hook`).

        Parameters
        ----------
        comm : tinynet.distributed.Communicator or None
        """
        if comm is not None and comm.size > 1:
            if self.recorder is not None:
                raise ValueError(f"{type(self).__name__}: gradient-norm recording (grad_norm_groups) runs in one "
                                 f"process only: it measures two backward passes of the local batch per step")
            from . import distributed

            distributed.install_abort_hook(comm)
            if self.grad_buffer is None:
                self.grad_buffer = distributed.GradientBuffer()
        self.comm = comm

    @property
    def distributed(self) -> bool:
        """True when training over more than one rank."""
        return self.comm is not None and self.comm.size > 1

    @property
    def is_chief(self) -> bool:
        """True in one process and on rank 0: the process that prints and writes files."""
        return self.comm is None or self.comm.rank == 0

    def _trackers(self):
        """Every accumulator of the logs: the loss, each output's loss, each metric."""
        return [self.loss_tracker] + [t for t in self.output_trackers if t is not None] + self.metric_objects

    def _check_trackers(self):
        for tracker in self._trackers():
            if not (hasattr(tracker, "total") and hasattr(tracker, "count")):
                raise ValueError(f"metric '{tracker.name}' ({type(tracker).__name__}) cannot be combined across "
                                 f"ranks: data-parallel training sums each metric's 'total' and 'count' over the "
                                 f"ranks (derive it from tinynet.metrics.Mean or MeanMetricWrapper)")

    def _sum_trackers(self):
        """Replace every tracker's total and count by their sums over the ranks (after an evaluation on shards)."""
        trackers = self._trackers()
        sums = self.comm.sum([v for t in trackers for v in (t.total, t.count)])
        for k, tracker in enumerate(trackers):
            tracker.total, tracker.count = float(sums[2 * k]), float(sums[2 * k + 1])

    # ------------------------------------------------------------------ one batch
    def prepare_inputs(self, xs, training):
        """The batch's input arrays, augmented and preprocessed (training only / always), cast to each input's
        dtype and moved to the model's device."""
        xs = list(xs)
        if self.augment is not None and training:
            xs[0] = self.augment(xs[0], self.rng)
        if self.preprocess is not None:
            xs[0] = self.preprocess(xs[0])
        out = []
        for t, a in zip(self.model.inputs, xs):
            if not backend.is_gpu_array(a):
                a = np.asarray(a, dtype=t.dtype)
            out.append(backend.to_device(a, self.model.device))
        return out

    def prepare_labels(self, ys):
        """The batch's label arrays on the model's device (an array shared by several outputs moves once)."""
        moved = {}
        out = []
        for y in ys:
            if y is None:
                out.append(None)
                continue
            if id(y) not in moved:
                moved[id(y)] = backend.to_device(np.asarray(y) if not backend.is_gpu_array(y) else y,
                                                 self.model.device)
            out.append(moved[id(y)])
        return out

    def weighted_loss(self, outs, ys):
        """``(total, values, grads)``: ``Σ w_k L_k``, each ``L_k`` (None without a loss), ``w_k ∂L_k/∂out_k``."""
        total, values, grads = 0.0, [], []
        for out, y, loss, w in zip(outs, ys, self.losses, self.loss_weights):
            if loss is None:
                values.append(None)
                grads.append(None)
                continue
            value, grad = loss.value_and_grad(y, out)
            values.append(value)
            total += w * value
            grads.append(grad * out.dtype.type(w))
        return total, values, grads

    def _forward(self, xb, training=True, check_finite=False):
        outs = self.model.forward(xb, training=training, check_finite=check_finite)
        return outs if isinstance(outs, list) else [outs]

    def _backward(self, grads, check_finite=False, retain_tape=False):
        # training needs no gradient for the images, nor (but for the grad-norm recorder's two passes) the tape
        # once it has been walked back: dropping it as it goes lowers the step's peak memory
        self.model.backward(grads if len(grads) > 1 else grads[0], check_finite=check_finite,
                            input_grads=False, retain_tape=retain_tape)

    def train_batch(self, xs, ys, lr=None):
        """One optimizer step on a batch.

        Parameters
        ----------
        xs : list of arrays
            One per model input (not yet prepared).
        ys : list of arrays or None
            One per output (the same array may serve several).
        lr : float, optional
            Set as the optimizer's learning rate before the step.

        Returns
        -------
        total : float, values : list of float or None (unweighted, per output), outs : list of arrays (the
        training-mode outputs), ys : the labels on the model's device

        Raises
        ------
        TrainingDiverged
            On a non-finite loss, gradient or weight, before the step is applied.
        RuntimeError
            In data-parallel training, where a step is :meth:`train_global_batch` (this one would update one rank
            alone and its weights would leave the others').
        """
        if self.distributed:
            raise RuntimeError(f"{type(self).__name__}.train_batch is one process's step; in data-parallel training "
                               f"every rank calls train_global_batch (fit does)")
        xb = self.prepare_inputs(xs, training=True)
        statistics = self._statistics_snapshot()
        try:
            outs = self._forward(xb)
            yb = self.prepare_labels(ys)
            total, values, grads = self.weighted_loss(outs, yb)
            if not np.isfinite(total):
                parts = ", ".join(f"{name} {v:.4g}" for name, v in zip(self.output_labels, values) if v is not None)
                raise self._diverged(xb, yb, f"non-finite loss {total} ({parts})")
            step = self.optimizer.iterations
            if self.recorder is not None and self.recorder.due(step):
                self.recorder.measure(step, lambda g: self._backward(g, retain_tape=True), grads)
            else:
                self._backward(grads)
            bad = self.model.first_nonfinite_weight(values=False)
            if bad is not None:  # the update is not applied: the weights stay those of the last good step
                raise self._diverged(xb, yb, f"non-finite value in layer '{bad[0]}' ({bad[1]})")
            if lr is not None:
                self.optimizer.learning_rate = lr
            self.last_lr = self.optimizer.learning_rate
            self.optimizer.step()  # checks everything before it changes a weight
        except Exception:
            self._restore_statistics(statistics)
            raise
        return total, values, outs, yb

    def _statistics_snapshot(self):
        """Copies of the weights that a training forward changes itself (BatchNormalization's moving statistics,
        any non-trainable weight): a refused step puts them back, so nothing of it is kept. They are a few
        vectors per layer."""
        return [(layer, i, w.copy()) for layer in self.model.layers
                for i, (w, trainable) in enumerate(zip(layer.weights, layer.trainable_flags)) if not trainable]

    @staticmethod
    def _restore_statistics(snapshot):
        for layer, i, saved in snapshot:
            layer.weights[i][...] = saved

    def _diverged(self, xb, yb, detail):
        """A :class:`TrainingDiverged` for this batch, naming the first layer whose value is non-finite.

        The batch is run once more with the model's finiteness checks; weights, BatchNormalization
        statistics and random generators are restored afterwards, so the diagnosis changes nothing.
        """
        first = self._diagnose(xb, yb)
        if first is not None:
            detail += f"; first: {first}"
        return TrainingDiverged(self.epoch + 1, self.optimizer.iterations + 1, detail)

    def _diagnose(self, xb, yb):
        """Run the batch again with the model's finiteness checks and return the first problem found (a
        string), or None; weights, statistics and generators are put back."""
        from . import checkpoint
        from .layers.base import NonFiniteError

        saved_weights = [(layer, [w.copy() for w in layer.weights]) for layer in self.model.layers if layer.weights]
        saved_rng = checkpoint.rng_states(self.model, self.rng)
        first = None
        try:
            outs = self._forward(xb, check_finite=True)
            _, _, grads = self.weighted_loss(outs, yb)
            self._backward(grads, check_finite=True)
        except NonFiniteError as error:
            first = str(error)
        finally:
            for layer, weights in saved_weights:  # as they were, non-finite values included
                layer.assign_prepared_weights(weights)
            checkpoint.set_rng_states(self.model, saved_rng, self.rng)
        return first

    # ------------------------------------------------------------------ one data-parallel step
    def train_global_batch(self, xs, ys, indices, lr=None):
        """One data-parallel optimizer step on the global batch ``indices`` of ``(xs, ys)``; every rank calls
        it with the same arguments.

        Rank r of N keeps the contiguous share ``shard(G, r, N)`` of the G examples; augmentation (when set)
        runs on the whole global batch from the shared generator and Dropout draws the global batch's masks, so
        the random draws are a single process's. Then, in the same order on every rank:

        1. forward on the share (the synchronized BatchNormalization layers exchange their statistics);
        2. one sum over the ranks of a few float64 numbers: :math:`G_r L_r` (the share's weighted loss),
           :math:`G_r L_{r,k}` per output, and every metric's total and count. The global loss
           :math:`L = \\frac{1}{G} \\sum_r G_r L_r` is then known everywhere, and every rank stops alike on a
           non-finite one;
        3. backward with the loss gradient scaled by :math:`G_r / G`;
        4. one all-reduce of every gradient in a flat buffer (:class:`tinynet.distributed.GradientBuffer`),
           carrying also the moving statistics of BatchNormalization layers that are not synchronized,
           weighted by :math:`G_r / G`: afterwards every rank holds :math:`∇L` of the global batch;
        5. the optimizer step.

        A rank whose share is empty (a last batch smaller than N) runs no forward: it takes part in every
        exchange with zeros (:func:`tinynet.distributed.join_forward_without_data` and the backward twin).

        Parameters
        ----------
        xs, ys : lists of arrays
            The whole training set (inputs; labels per output, None where unused).
        indices : 1-D int array
            The global batch's rows.
        lr : float, optional

        Returns
        -------
        total : float, values : list of float or None (per output): the global batch's losses. The trackers
        (running loss and metrics) are updated with the global batch.

        Raises
        ------
        TrainingDiverged
            On every rank alike, before the step is applied.
        """
        from . import distributed

        comm = self.comm
        global_batch = len(indices)
        start, stop = distributed.shard(global_batch, comm.rank, comm.size)
        n = stop - start
        local = indices[start:stop]
        if self.augment is not None:  # the whole global batch, so the generator's draws are one process's
            xg = [a[indices] for a in xs]
            xg[0] = self.augment(xg[0], self.rng)
            xl = [a[start:stop] for a in xg]
        else:
            xl = [a[local] for a in xs]
        sliced, yl = {}, []
        for y in ys:
            if y is not None and id(y) not in sliced:
                sliced[id(y)] = y[local]
            yl.append(None if y is None else sliced[id(y)])
        with_loss = [loss is not None for loss in self.losses]
        trackers = self._trackers()
        before = [(t.total, t.count) for t in trackers]
        statistics = self._statistics_snapshot()
        try:
            return self._global_step(comm, global_batch, n, start, xl, yl, with_loss, trackers, before, lr)
        except Exception:
            self._restore_statistics(statistics)
            raise

    def _global_step(self, comm, global_batch, n, start, xl, yl, with_loss, trackers, before, lr):
        """:meth:`train_global_batch` once the rank's share is sliced: forward, sums, backward, step."""
        from . import distributed

        xb = yb = grads = None
        total, values = 0.0, [0.0 if flag else None for flag in with_loss]
        if n > 0:
            xb = self.prepare_inputs(xl, training=False)  # augmented above: preprocess and cast only
            with distributed.global_batch_draws(self.model, global_batch, start):
                outs = self._forward(xb)
            yb = self.prepare_labels(yl)
            total, values, grads = self.weighted_loss(outs, yb)
            self.update_trackers(total, values, outs, yb, n)
        else:
            distributed.join_forward_without_data(self.model, global_batch)
        deltas = [v for t, (total0, count0) in zip(trackers, before) for v in (t.total - total0, t.count - count0)]
        for t, (total0, count0) in zip(trackers, before):  # the global sums are added once the step is done
            t.total, t.count = total0, count0
        sums = comm.sum([n * total] + [n * v for v in values if v is not None] + deltas)
        total = float(sums[0] / global_batch)
        it = iter(sums[1:1 + sum(with_loss)] / global_batch)
        values = [float(next(it)) if flag else None for flag in with_loss]
        if not np.isfinite(total):
            parts = ", ".join(f"{name} {v:.4g}" for name, v in zip(self.output_labels, values) if v is not None)
            raise self._diverged_on_ranks(xb, yb, f"non-finite loss {total} ({parts})")
        if n > 0:
            self._backward([None if g is None else g * g.dtype.type(n / global_batch) for g in grads])
        else:
            distributed.join_backward_without_data(self.model, with_loss)
        self.grad_buffer.allreduce(self.model, comm, statistics_weight=n / global_batch, zero_gradients=n == 0)
        bad = self.model.first_nonfinite_weight(values=False)
        if bad is not None:
            raise self._diverged_on_ranks(xb, yb, f"non-finite value in layer '{bad[0]}' ({bad[1]})")
        if lr is not None:
            self.optimizer.learning_rate = lr
        self.last_lr = self.optimizer.learning_rate
        self.optimizer.step()
        offset = 1 + sum(with_loss)
        for k, (t, (total0, count0)) in enumerate(zip(trackers, before)):
            t.total = total0 + float(sums[offset + 2 * k])
            t.count = count0 + float(sums[offset + 2 * k + 1])
        return total, values

    def _diverged_on_ranks(self, xb, yb, detail):
        """:meth:`_diverged` for a data-parallel step: each rank with examples runs its share again with the
        finiteness checks (BatchNormalization on the share's own statistics, so no rank waits for another in
        a run that may stop half-way), and the first rank that found something names the layer."""
        from . import distributed

        first = None
        if xb is not None:
            with distributed.synchronize_batch_norm(self.model, None):
                first = self._diagnose(xb, yb)
        found = [(rank, text) for rank, text in enumerate(self.comm.allgather_object(first)) if text is not None]
        if found:
            detail += f"; first: {found[0][1]} (rank {found[0][0]}'s share of the batch)"
        return TrainingDiverged(self.epoch + 1, self.optimizer.iterations + 1, detail)

    # ------------------------------------------------------------------ tracking
    def reset_trackers(self):
        self.loss_tracker.reset_state()
        for tracker in self.output_trackers:
            if tracker is not None:
                tracker.reset_state()
        for metric in self.metric_objects:
            metric.reset_state()

    def update_trackers(self, total, values, outs, ys, n):
        self.loss_tracker.update_state(total, sample_weight=n)
        for tracker, value in zip(self.output_trackers, values):
            if tracker is not None and value is not None:
                tracker.update_state(value, sample_weight=n)
        for per_output, out, y in zip(self.metrics, outs, ys):
            for _, metric in per_output:
                metric.update_state(y, out)

    def tracker_logs(self):
        """The running values: ``loss``, each output's loss key, each metric key."""
        logs = {"loss": self.loss_tracker.result()}
        for key, tracker in zip(self.loss_keys, self.output_trackers):
            if tracker is not None:
                logs[key] = tracker.result()
        for per_output in self.metrics:
            for key, metric in per_output:
                logs[key] = metric.result()
        return logs

    # ------------------------------------------------------------------ epochs
    def run_epoch(self, xs, ys, epoch, batch_size, shuffle=True, callbacks=None):
        """One pass over ``(xs, ys)`` in mini-batches (a new random order when ``shuffle``).

        Returns
        -------
        dict : the epoch's logs (means over its examples), or the partial ones when a callback stopped training.

        Raises
        ------
        TrainingDiverged
            Naming ``epoch + 1`` and the step, unless a callback set ``model.stop_training`` on being shown the
            failed batch (``logs['loss'] = nan``, e.g. :class:`~tinynet.callbacks.TerminateOnNaN`): then
            :class:`StoppedMidEpoch`, which :meth:`run_epochs` turns into the end of training.
        """
        callbacks = callbacks if callbacks is not None else callbacks_module.CallbackList()
        n = len(xs[0])
        steps = _num_batches(n, batch_size)
        order = self.rng.permutation(n) if shuffle else np.arange(n)
        self.reset_trackers()
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            if not self.distributed:
                xb = [a[idx] for a in xs]
                sliced, yb = {}, []
                for y in ys:  # an array shared by several outputs is sliced once
                    if y is not None and id(y) not in sliced:
                        sliced[id(y)] = y[idx]
                    yb.append(None if y is None else sliced[id(y)])
            callbacks.on_train_batch_begin(i)
            lr = self.schedule(epoch + i / steps) if self.schedule is not None else None
            try:
                if self.distributed:  # the global batch idx, split over the ranks (trackers updated inside)
                    self.train_global_batch(xs, ys, idx, lr)
                else:
                    total, values, outs, ydev = self.train_batch(xb, yb, lr)
            except TrainingDiverged as error:
                failed = dict(self.tracker_logs(), loss=math.nan)
                callbacks.on_train_batch_end(i, failed)
                if getattr(self.model, "stop_training", False):  # TerminateOnNaN: stop, without this epoch
                    raise StoppedMidEpoch(failed) from None
                raise TrainingDiverged(epoch + 1, i + 1, error.detail) from None
            if not self.distributed:
                self.update_trackers(total, values, outs, ydev, len(idx))
            callbacks.on_train_batch_end(i, self.tracker_logs())
            if getattr(self.model, "stop_training", False):
                break
        return self.tracker_logs()

    def run_epochs(self, xs, ys, start, end, batch_size, shuffle=True, validate=None, callbacks=None,
                   extras=None):
        """Epochs ``start .. end - 1`` (0-based): the loop both ``Model.fit`` and ``Trainer.fit`` run.

        Parameters
        ----------
        xs, ys : lists of arrays (ys per output, None where unused)
        start, end : int
        batch_size : int
        shuffle : bool
        validate : callable ``() -> dict``, optional
            The validation logs (keys with their ``val_`` prefix), run after each epoch.
        callbacks : CallbackList, optional
        extras : callable ``(epoch, logs, seconds) -> None``, optional
            Adds entries to an epoch's logs before they are checked and recorded (the trainer's ``lr``,
            ``epoch``, ``time``).

        Returns
        -------
        dict : the last epoch's logs (empty if none ran)
        """
        callbacks = callbacks if callbacks is not None else callbacks_module.CallbackList()
        if not self.distributed:
            return self._run_epochs(xs, ys, start, end, batch_size, shuffle, validate, callbacks, extras)
        from . import distributed

        self._check_trackers()
        plan = (int(start), int(end), len(xs[0]), int(batch_size), bool(shuffle))
        plans = self.comm.allgather_object(plan)
        if any(p != plans[0] for p in plans):  # they would not even run the same number of steps
            raise ValueError(f"the ranks disagree on the run (first epoch, end epoch, examples, global batch, "
                             f"shuffle): {dict(enumerate(plans))}; every rank must train the same data from the "
                             f"same state (to resume, every rank must read the checkpoint)")
        distributed.broadcast_training_state(self, self.comm)  # every rank starts from rank 0's state
        callbacks.set_chief(self.comm.rank == 0)
        with distributed.synchronize_batch_norm(self.model, self.comm):
            return self._run_epochs(xs, ys, start, end, batch_size, shuffle, validate, callbacks, extras)

    def _run_epochs(self, xs, ys, start, end, batch_size, shuffle, validate, callbacks, extras):
        self.model.stop_training = False
        self.model.running_engine = self  # Model.optimizer for callbacks (a Trainer's model is not compiled)
        try:
            return self._epochs(xs, ys, start, end, batch_size, shuffle, validate, callbacks, extras)
        finally:
            self.model.running_engine = None

    def _epochs(self, xs, ys, start, end, batch_size, shuffle, validate, callbacks, extras):
        callbacks.on_train_begin()
        logs = {}
        for epoch in range(start, end):
            callbacks.on_epoch_begin(epoch)
            began = time.perf_counter()
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite values are checked
                try:
                    logs = self.run_epoch(xs, ys, epoch, batch_size, shuffle, callbacks)
                except StoppedMidEpoch as stop:
                    callbacks.on_train_end(stop.logs)
                    return stop.logs
                if validate is not None:
                    logs.update(validate())
            if extras is not None:
                extras(epoch, logs, time.perf_counter() - began)
            bad = self.model.first_nonfinite_weight()
            non_finite = [k for k, v in logs.items() if isinstance(v, float) and not np.isfinite(v)]
            if bad is not None or non_finite:  # never record, or checkpoint, a state that is not finite
                detail = (f"non-finite value in layer '{bad[0]}' ({bad[1]})" if bad is not None
                          else f"non-finite {', '.join(non_finite)}")
                raise TrainingDiverged(epoch + 1, None, detail)
            self.epoch = epoch + 1
            for k, v in logs.items():
                self.history.setdefault(k, []).append(v)
            callbacks.on_epoch_end(epoch, logs)
            if self.model.stop_training:
                break
        callbacks.on_train_end(logs)
        return logs

    # ------------------------------------------------------------------ evaluation
    def evaluate_arrays(self, xs, ys, batch_size, callbacks=None):
        """Losses and metrics over ``(xs, ys)`` in inference mode (no shuffling, no augmentation).

        Returns
        -------
        dict : ``loss`` (the weighted total), each output's loss key, each metric key (no ``val_`` prefix).
        """
        callbacks = callbacks if callbacks is not None else callbacks_module.CallbackList()
        if self.distributed:  # each rank evaluates its contiguous shard; the sums are added at the end
            from . import distributed

            self._check_trackers()
            callbacks.set_chief(self.comm.rank == 0)
            lo, hi = distributed.shard(len(xs[0]), self.comm.rank, self.comm.size)
            xs = [a[lo:hi] for a in xs]
            ys = [None if y is None else y[lo:hi] for y in ys]
        n = len(xs[0])
        self.reset_trackers()
        callbacks.on_test_begin()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(_num_batches(n, batch_size)):
                callbacks.on_test_batch_begin(i)
                sl = slice(i * batch_size, (i + 1) * batch_size)
                xb = self.prepare_inputs([a[sl] for a in xs], training=False)
                outs = self.model.run(xb, training=False)
                yb = self.prepare_labels([None if y is None else y[sl] for y in ys])
                total, values, _ = self.weighted_loss(outs, yb)
                self.update_trackers(total, values, outs, yb, len(xb[0]))
                callbacks.on_test_batch_end(i, self.tracker_logs())
        if self.distributed:
            self._sum_trackers()
        logs = self.tracker_logs()
        callbacks.on_test_end(logs)
        return logs


# ------------------------------------------------------------------------------------------ Keras: compile
def output_names(model):
    """The outputs' names, as Keras names them: the name of the layer that produced each."""
    return [t.name for t in model.outputs]


def _per_output(what, value, names, default, allow_single=True):
    """``value`` (one for all, a list with one per output, or a dict by output name) as a list per output."""
    n = len(names)
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"compile: {what} has keys {unknown} that are not output names; the model's outputs "
                             f"are {names}")
        return [value.get(name, default) for name in names]
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"compile: {what} is a list of {len(value)} for a model with {n} output(s) {names}; "
                             f"give one entry per output (None for none), or a dict by output name")
        return list(value)
    if not allow_single:
        raise ValueError(f"compile: {what} must be a list or a dict, got {type(value).__name__}")
    return [value] * n


def _check_weight(name, w):
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(float(w)) or float(w) < 0:
        raise ValueError(f"compile: loss_weights for output '{name}' must be a finite number >= 0, got {w!r}")
    return float(w)


def _metric_spec(metrics, names):
    """Per output, the list of metric identifiers."""
    if metrics is None:
        return [[] for _ in names]
    if isinstance(metrics, (str, metrics_module.Metric)) or callable(metrics):
        raise ValueError(f"compile: metrics must be a list or a dict (e.g. metrics=['accuracy']), got {metrics!r}")
    if len(names) == 1:
        flat = []
        items = metrics.values() if isinstance(metrics, dict) else metrics
        if isinstance(metrics, dict) and set(metrics) - set(names):
            raise ValueError(f"compile: metrics has keys {sorted(set(metrics) - set(names))} that are not output "
                             f"names; the model's output is {names}")
        for item in items:
            flat.extend(_as_list(item) if item is not None else [])
        return [flat]
    if isinstance(metrics, (list, tuple)) and len(metrics) != len(names):
        raise ValueError(f"compile: for a model with {len(names)} outputs {names}, metrics as a list needs one "
                         f"entry per output (a metric, a list of metrics, or None), got {len(metrics)}; or give a "
                         f"dict by output name, e.g. {{'{names[-1]}': ['accuracy']}}")
    per_output = _per_output("metrics", metrics, names, None, allow_single=False)
    return [[] if item is None else _as_list(item) for item in per_output]


def _metric_keys(spec, names):
    """Keras' log keys: the metric's name, prefixed with the output's name when there are several outputs,
    with ``_1``, ``_2``, ... for repeats."""
    keys, seen = [], {}
    for per_output, name in zip(spec, names):
        row = []
        for identifier, metric in per_output:
            base = identifier if isinstance(identifier, str) else metric.name
            key = f"{name}_{base}" if len(names) > 1 else base
            if key in seen:
                seen[key] += 1
                key = f"{key}_{seen[key] - 1}"
            else:
                seen[key] = 1
            row.append(key)
        keys.append(row)
    return keys


class KerasState(Engine):
    """The engine behind a compiled :class:`tinynet.Model` (``model.compile`` builds it).

    ``'accuracy'`` metrics are resolved on the first labels seen, as Keras does.
    """

    def __init__(self, model, optimizer, losses, loss_weights, metric_ids, loss_keys):
        super().__init__(model, optimizer, losses, loss_weights, [[] for _ in losses], loss_keys)
        self.metric_ids = metric_ids
        self.built_metrics = False
        names = output_names(model)
        # everything but 'accuracy' is built now, so unknown names fail in compile
        for per_output in metric_ids:
            for identifier in per_output:
                if not (isinstance(identifier, str) and identifier in metrics_module.ACCURACY_NAMES):
                    metrics_module.get(identifier)
        self.names = names

    def build_metrics(self, ys, who="fit", more=()):
        """Resolve the metrics against the labels ``ys`` (once), after checking ``ys`` and each ``(labels, what)``
        of ``more`` (validation labels) against the losses and the metrics so resolved: labels that are refused
        resolve nothing, so a corrected call is not judged by a mistaken one."""
        metrics = self.metrics if self.built_metrics else self._resolve_metrics(ys)
        for labels, what in ((ys, "y"), *more):
            check_labels(self, labels, who, what, metrics)
        self.metrics, self.built_metrics = metrics, True

    def _resolve_metrics(self, ys):
        """The metrics per output, ``'accuracy'`` resolved from the shapes of ``ys``; nothing is kept."""
        spec = []
        for per_output, y, t in zip(self.metric_ids, ys, self.model.outputs):
            row = []
            for identifier in per_output:
                if isinstance(identifier, str) and identifier in metrics_module.ACCURACY_NAMES:
                    metric = metrics_module.resolve_accuracy(identifier, tuple(np.shape(y)), t.example_shape)
                else:
                    metric = metrics_module.get(identifier)
                row.append((identifier, metric))
            spec.append(row)
        keys = _metric_keys(spec, self.names)
        return [[(key, metric) for key, (_, metric) in zip(row_keys, row)] for row_keys, row in zip(keys, spec)]


def compile_model(model, optimizer, loss, loss_weights=None, metrics=None):
    """Build the :class:`KerasState` behind ``model.compile(...)``; every argument is checked here.

    Parameters
    ----------
    optimizer : str or Optimizer
        ``'adam'``, ``'sgd'`` (Keras' defaults) or an object.
    loss : str, Loss, callable, list or dict
        One for every output, a list with one per output (``None`` for an output without a loss), or a dict by
        output name.
    loss_weights : float, list or dict, optional
        Per output (default 1.0), e.g. GoogLeNet's ``[0.3, 0.3, 1.0]`` or ``{'aux1_output': 0.3, ...}``.
    metrics : list or dict, optional
        Single output: a list (``['accuracy']``). Several outputs: a list with one entry (a metric, a list of
        metrics, or None) per output, or a dict by output name.
    """
    names = output_names(model)
    if loss is None:
        raise ValueError("compile: loss is required, e.g. loss='sparse_categorical_crossentropy' for class indices "
                         "or 'categorical_crossentropy' for one-hot labels")
    try:
        optimizer = optimizers_module.get(optimizer)
    except ValueError as error:
        raise ValueError(f"compile: {error}") from None
    try:
        losses = [None if item is None else losses_module.get(item) for item in _per_output("loss", loss, names, None)]
    except ValueError as error:
        raise ValueError(f"compile: {error}" if not str(error).startswith("compile") else str(error)) from None
    if all(item is None for item in losses):
        raise ValueError(f"compile: no output has a loss (outputs {names})")
    if loss_weights is None:
        weights = [1.0] * len(names)
    elif isinstance(loss_weights, numbers.Real) and not isinstance(loss_weights, bool):
        weights = [loss_weights] * len(names)
    else:
        weights = _per_output("loss_weights", loss_weights, names, 1.0, allow_single=False)
    weights = [_check_weight(name, w) for name, w in zip(names, weights)]
    with_loss = [name for name, item in zip(names, losses) if item is not None]
    loss_keys = [f"{name}_loss" if item is not None and len(with_loss) > 1 else None
                 for name, item in zip(names, losses)]
    try:
        metric_ids = _metric_spec(metrics, names)
        state = KerasState(model, optimizer, losses, weights, metric_ids, loss_keys)
    except ValueError as error:
        raise ValueError(str(error) if str(error).startswith("compile") else f"compile: {error}") from None
    return state


# ------------------------------------------------------------------------------------------ Keras: fit
VERBOSE = {"auto": 1, 0: 0, 1: 1, 2: 2}


def _verbose(who, verbose):
    if isinstance(verbose, bool) or verbose not in VERBOSE:
        raise ValueError(f"{who}: verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    return VERBOSE[verbose]


def _positive_int(who, name, value):
    return check_number(who, name, value, low=1, integer=True)


def standardize_x(model, x, who, what="x"):
    """The input arrays as a list (one per model input), checked against the model's inputs."""
    inputs = model.inputs
    names = [t.name for t in inputs]
    if x is None:
        raise ValueError(f"{who}: {what} is required (arrays, one per model input)")
    if isinstance(x, dict):
        unknown = sorted(set(x) - set(names))
        missing = [n for n in names if n not in x]
        if unknown or missing:
            raise ValueError(f"{who}: {what} as a dict needs the input names {names}; missing {missing}, "
                             f"unknown {unknown}")
        xs = [x[n] for n in names]
    elif len(inputs) > 1:
        if not isinstance(x, (list, tuple)):
            raise ValueError(f"{who}: the model has {len(inputs)} inputs {names}; give {what} as a list with one "
                             f"array per input, or a dict by input name")
        xs = list(x)
    elif isinstance(x, (list, tuple)) and len(x) == 1 and np.ndim(x[0]) == len(inputs[0].example_shape) + 1:
        xs = [x[0]]
    else:
        xs = [x]
    if len(xs) != len(inputs):
        raise ValueError(f"{who}: the model has {len(inputs)} input(s) {names}, {what} gives {len(xs)} array(s)")
    out = []
    for t, a in zip(inputs, xs):
        if not backend.is_gpu_array(a):
            a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{who}: {what} for input '{t.name}' has dtype {a.dtype}; expected numbers")
        if a.ndim == 0 or tuple(a.shape[1:]) != t.example_shape:
            raise ValueError(f"{who}: {what} for input '{t.name}' has shape {tuple(a.shape)}, the model takes "
                             f"(N, {', '.join(map(str, t.example_shape))})"
                             + (" (a channel axis is missing: add one with x[..., None])"
                                if tuple(a.shape[1:]) + (1,) == t.example_shape else ""))
        out.append(a)
    sizes = {len(a) for a in out}
    if len(sizes) > 1:
        raise ValueError(f"{who}: the input arrays of {what} have different lengths {[len(a) for a in out]}")
    return out


def standardize_y(state, y, n, who, what="y"):
    """The label arrays as a list per output (the same array for every output when one is given)."""
    names = output_names(state.model)
    if y is None:
        raise ValueError(f"{who}: {what} is required (labels for the model's output(s) {names})")
    if len(names) == 1 and isinstance(y, (list, tuple)) and len(y) == 1 and np.ndim(y[0]) >= 1 and len(y[0]) == n:
        y = y[0]  # [labels] for a single output
    if isinstance(y, dict):
        unknown = sorted(set(y) - set(names))
        if unknown:
            raise ValueError(f"{who}: {what} has keys {unknown} that are not output names; outputs: {names}")
        ys = [y.get(name) for name in names]
    elif isinstance(y, (list, tuple)) and len(names) > 1 and len(y) == len(names) \
            and all(item is None or np.ndim(item) >= 1 for item in y) and not all(np.ndim(item) == 0 for item in y):
        ys = list(y)
    else:
        ys = [y] * len(names)
        if isinstance(y, (list, tuple)) and len(names) > 1 and len(y) != n:
            raise ValueError(f"{who}: {what} is a list of {len(y)} for {len(names)} outputs {names}; give one "
                             f"array per output, a dict by output name, or one array for all")
    out, converted = [], {}
    for name, item, loss, per_output in zip(names, ys, state.losses, state.metric_ids):
        if item is None:
            if loss is not None or per_output:
                raise ValueError(f"{who}: no labels in {what} for output '{name}', which has a loss or metrics")
            out.append(None)
            continue
        if id(item) not in converted:
            array = item if backend.is_gpu_array(item) else np.asarray(item)
            if array.ndim == 0:
                raise ValueError(f"{who}: {what} for output '{name}' is a single number; expected an array of "
                                 f"labels (N, ...)")
            if len(array) != n:
                x_what = what[:-1] + "x" if what.endswith(" y") else "x"  # 'validation_data y' -> '... x'
                raise ValueError(f"{who}: {x_what} has {n} examples but {what} for output '{name}' has {len(array)}")
            converted[id(item)] = array
        out.append(converted[id(item)])
    return out


def check_labels(state, ys, who, what="y", metrics=None):
    """Every output's labels against its loss and metrics (``state.metrics`` unless given): shapes, dtypes,
    class indices in range."""
    metrics = state.metrics if metrics is None else metrics
    for name, y, loss, t, per_output in zip(state.names, ys, state.losses, state.model.outputs, metrics):
        if y is None:
            continue
        host = backend.to_numpy(y)
        where = f"{who}: {what} for output '{name}'"
        if loss is not None:
            loss.check_labels(host, t.example_shape, where)
        for _, metric in per_output:
            metric.check_labels(host, t.example_shape, where)


def _require_compiled(model, state, who):
    if state is None:
        raise ValueError(f"{who}: the model must be compiled first: call model.compile(optimizer=..., loss=...) "
                         f"before model.{who.split('.')[-1]}()")


def fit(model, state, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
        validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0, distributed=None):
    """``Model.fit``: check every argument, then run :meth:`Engine.run_epochs`; return the ``History``.

    ``distributed`` (True, a :class:`tinynet.distributed.Communicator` or an mpi4py communicator; False for one
    process; None keeps what :func:`tinynet.distributed.distribute` set) trains data-parallel, with
    ``batch_size`` the global batch.
    """
    who = "fit"
    _require_compiled(model, state, who)
    if distributed is not None:
        from . import distributed as distributed_module

        state.set_communicator(distributed_module.get_communicator(distributed))
    verbose = _verbose(who, verbose)
    batch_size = 32 if batch_size is None else _positive_int(who, "batch_size", batch_size)
    epochs = check_number(who, "epochs", epochs, low=0, integer=True)
    initial_epoch = check_number(who, "initial_epoch", initial_epoch, low=0, integer=True)
    if epochs < initial_epoch:
        raise ValueError(f"{who}: epochs ({epochs}) must be >= initial_epoch ({initial_epoch}); epochs is the index "
                         f"of the last epoch, not a count of more epochs")
    validation_split = check_number(who, "validation_split", validation_split, low=0)
    if validation_split >= 1:
        raise ValueError(f"{who}: validation_split must be in [0, 1), got {validation_split!r}")
    check_flag(who, "shuffle", shuffle, ValueError)
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"{who}: callbacks must be a list of tinynet.callbacks.Callback, got "
                         f"{type(callbacks).__name__}")
    for cb in callbacks or []:
        if not isinstance(cb, callbacks_module.Callback):
            raise ValueError(f"{who}: callbacks must be tinynet.callbacks.Callback objects, got {type(cb).__name__}")
    xs = standardize_x(model, x, who)
    n = len(xs[0])
    if n == 0:
        raise ValueError(f"{who}: x is empty (0 examples)")
    ys = standardize_y(state, y, n, who)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (list, tuple)) or len(validation_data) != 2:
            raise ValueError(f"{who}: validation_data must be a tuple (x_val, y_val), got "
                             f"{type(validation_data).__name__}"
                             + (f" of {len(validation_data)}" if isinstance(validation_data, (list, tuple)) else "")
                             + " (sample weights are not supported)")
        vx = standardize_x(model, validation_data[0], who, "validation_data x")
        if len(vx[0]) == 0:
            raise ValueError(f"{who}: validation_data is empty (0 examples)")
        vy = standardize_y(state, validation_data[1], len(vx[0]), who, "validation_data y")
        val = (vx, vy)
    elif validation_split > 0:
        split = int(math.floor(n * (1.0 - validation_split)))
        if split == 0 or split == n:
            raise ValueError(f"{who}: validation_split={validation_split:g} of {n} examples leaves "
                             f"{'no training' if split == 0 else 'no validation'} examples")
        val = ([a[split:] for a in xs], [None if t is None else t[split:] for t in ys])
        xs = [a[:split] for a in xs]
        ys = [None if t is None else t[:split] for t in ys]
        n = split
    more = () if val is None else ((val[1], "validation_data y" if validation_data is not None else "y (validation)"),)
    state.build_metrics(ys, who, more)
    steps = _num_batches(n, batch_size)
    cbs = callbacks_module.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=model,
                                        verbose=verbose, epochs=epochs, steps=steps)
    state.batch_size = batch_size

    def validate():
        logs = state.evaluate_arrays(val[0], val[1], batch_size, callbacks=cbs)
        return {f"val_{k}": v for k, v in logs.items()}

    try:
        state.run_epochs(xs, ys, initial_epoch, epochs, batch_size, shuffle=bool(shuffle),
                         validate=validate if val is not None else None, callbacks=cbs)
    finally:
        for cb in cbs:
            if isinstance(cb, callbacks_module.ProgbarLogger):
                cb.close()
    return cbs.history


def evaluate(model, state, x=None, y=None, batch_size=None, verbose="auto", return_dict=False, callbacks=None):
    """``Model.evaluate``: the loss (and metrics) in inference mode, as Keras returns them."""
    who = "evaluate"
    _require_compiled(model, state, who)
    verbose = _verbose(who, verbose)
    batch_size = 32 if batch_size is None else _positive_int(who, "batch_size", batch_size)
    xs, ys = _batch_arrays(model, state, x, y, who)
    cbs = callbacks_module.CallbackList(callbacks, add_progbar=verbose != 0, model=model, verbose=verbose,
                                        steps=_num_batches(len(xs[0]), batch_size), evaluating=True)
    return _returned(state.evaluate_arrays(xs, ys, batch_size, callbacks=cbs), return_dict)


def _batch_arrays(model, state, x, y, who):
    """``x`` and ``y`` as lists of arrays, checked as :func:`fit` checks them (metrics resolved from ``y``)."""
    _require_compiled(model, state, who)
    xs = standardize_x(model, x, who)
    n = len(xs[0])
    if n == 0:
        raise ValueError(f"{who}: x is empty (0 examples)")
    ys = standardize_y(state, y, n, who)
    state.build_metrics(ys, who)
    return xs, ys


def _returned(logs, return_dict):
    """What Keras' ``evaluate``/``train_on_batch`` return: the logs, or their values (one alone as a number)."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def train_on_batch(model, state, x=None, y=None, return_dict=False):
    """``Model.train_on_batch``: one optimizer step on the batch ``(x, y)``, checked as :func:`fit` checks its
    arguments; return this batch's loss and metrics (as Keras since 2026, not running means over the calls).

    The step is :meth:`Engine.train_batch` (or, data-parallel, :meth:`Engine.train_global_batch` over the whole
    batch): a non-finite loss or gradient raises :class:`TrainingDiverged` and changes nothing. The loss and the
    metrics are those of the training-mode forward that the step differentiated (Dropout on, BatchNormalization
    on the batch's statistics), before the update.
    """
    who = "train_on_batch"
    xs, ys = _batch_arrays(model, state, x, y, who)
    state.reset_trackers()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite values are checked
        try:
            if state.distributed:
                state.train_global_batch(xs, ys, np.arange(len(xs[0])))
            else:
                total, values, outs, ydev = state.train_batch(xs, ys)
                state.update_trackers(total, values, outs, ydev, len(xs[0]))
        except TrainingDiverged as error:
            raise TrainingDiverged(state.epoch + 1, state.optimizer.iterations + 1, error.detail) from None
    return _returned(state.tracker_logs(), return_dict)


def test_on_batch(model, state, x=None, y=None, return_dict=False):
    """``Model.test_on_batch``: the loss and metrics of the batch ``(x, y)`` in inference mode, as
    :func:`evaluate` with the whole batch at once."""
    xs, ys = _batch_arrays(model, state, x, y, "test_on_batch")
    return _returned(state.evaluate_arrays(xs, ys, len(xs[0])), return_dict)


__all__ = ["Engine", "KerasState", "TrainingDiverged", "StoppedMidEpoch", "compile_model", "fit", "evaluate",
           "train_on_batch", "test_on_batch", "check_number", "output_names", "standardize_x", "standardize_y",
           "check_labels"]
