"""The one training loop, shared by :meth:`tinynet.Model.fit` (Keras' API) and :class:`tinynet.training.Trainer`.

:class:`Engine` holds a training run's state (model, optimizer, per-output losses and weights, metrics,
the shuffling generator, epoch count, history) and runs it:

* :meth:`Engine.train_batch`: forward, the weighted loss :math:`L = \\sum_k w_k L_k` over the outputs that have a
  loss, backward, then the optimizer step. A non-finite loss or gradient, or an update that would make a weight
  or the optimizer's state non-finite (refused by :meth:`tinynet.optimizers.Optimizer.step`, which puts back
  everything it touched), raises :class:`TrainingDiverged` naming the epoch, the step and, where it can be
  found, the first layer that produced a non-finite value; the step is then not applied.
* :meth:`Engine.run_epochs`: epochs of shuffled mini-batches inside ``np.errstate`` (non-finite values are
  checked, not warned about), the callbacks' hooks, validation after each epoch, a last finiteness check of the
  weights and the logs, the history, ``model.stop_training``.
* :meth:`Engine.evaluate_arrays`: the losses and metrics in inference mode, batch by batch.
* Sample weights (``sample_weights``, one array ``(N,)`` or None per output, on the three above): each output's
  loss becomes Keras' ``Σ w_n l_n / N`` over the batch (its loss object weights its value and gradient, see
  :mod:`tinynet.losses`) and the weighted metrics are weighted; the logged ``loss`` stays the mean of the
  batches' losses weighted by their sizes, as Keras logs it. One process only.

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
    """Training met a non-finite loss, gradient or weight, or a step that would make a weight non-finite, and
    stopped before using it.

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


def _take(arrays, index):
    """``[a[index] for a in arrays]`` with None kept and an array shared by several outputs sliced once;
    ``None`` for ``None``."""
    if arrays is None:
        return None
    sliced, out = {}, []
    for a in arrays:
        if a is not None and id(a) not in sliced:
            sliced[id(a)] = a[index]
        out.append(None if a is None else sliced[id(a)])
    return out


def _refuse_distributed_weights(engine, sample_weights):
    if sample_weights is not None and engine.distributed:
        raise RuntimeError(f"{type(engine).__name__}: sample weights are not supported in data-parallel training")


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
    weighted_metrics : list of list of (str, tinynet.metrics.Metric), optional
        Per output, metrics that take the sample weights (Keras' ``weighted_metrics``), logged after ``metrics``.
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
                 preprocess=None, augment=None, rng=None, grad_recorder=None, communicator=None,
                 weighted_metrics=None):
        self.model = model
        self.optimizer = optimizer.attach(model)
        self.losses = list(losses)
        self.loss_weights = [float(w) for w in loss_weights]
        self.metrics = [list(m) for m in metrics]
        self.weighted_metrics = [list(m) for m in weighted_metrics] if weighted_metrics is not None \
            else [[] for _ in self.metrics]
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
        """Every metric object (the weighted ones last), in log order."""
        return [metric for per_output in self.metrics + self.weighted_metrics for _, metric in per_output]

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
        """The batch's label (or sample-weight) arrays on the model's device (an array shared by several outputs
        moves once); ``None`` stays ``None``."""
        if ys is None:
            return None
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

    def weighted_loss(self, outs, ys, sample_weights=None):
        """``(total, values, grads)``: ``Σ w_k L_k``, each ``L_k`` (None without a loss), ``w_k ∂L_k/∂out_k``.

        The gradient is the loss object's own (:meth:`tinynet.losses.Loss.value_and_grad`: a fused softmax or
        sigmoid with ``from_logits``, Keras' clipping otherwise). ``sample_weights``: per output, the batch's
        weights ``(n,)`` or None, passed to that output's loss.
        """
        total, values, grads = 0.0, [], []
        sample_weights = [None] * len(outs) if sample_weights is None else sample_weights
        for out, y, loss, w, sw in zip(outs, ys, self.losses, self.loss_weights, sample_weights):
            if loss is None:
                values.append(None)
                grads.append(None)
                continue
            value, grad = loss.value_and_grad(y, out) if sw is None else loss.value_and_grad(y, out, sw)
            values.append(value)
            total += w * value
            grads.append(grad * out.dtype.type(w))
        return total, values, grads

    def _forward(self, xb, training=True, check_finite=False):
        outs = self.model.forward(xb, training=training, check_finite=check_finite)
        return outs if isinstance(outs, list) else [outs]

    def _backward(self, grads, check_finite=False, retain_tape=False):
        # training needs no gradient for the images, nor (but for the grad-norm recorder's two passes) the tape
        # once it has been walked back: dropping it as it goes lowers the step's peak memory, and so does
        # dropping the last step's gradients first (PyTorch's zero_grad)
        self.model.clear_gradients()
        self.model.backward(grads if len(grads) > 1 else grads[0], check_finite=check_finite,
                            input_grads=False, retain_tape=retain_tape)

    def train_batch(self, xs, ys, lr=None, sample_weights=None):
        """One optimizer step on a batch.

        Parameters
        ----------
        xs : list of arrays
            One per model input (not yet prepared).
        ys : list of arrays or None
            One per output (the same array may serve several).
        lr : float, optional
            Set as the optimizer's learning rate before the step.
        sample_weights : list of arrays (n,) or None, optional
            Per output, the batch's sample weights (see :meth:`weighted_loss`).

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
            sb = self.prepare_labels(sample_weights)
            total, values, grads = self.weighted_loss(outs, yb, sb)
            if not np.isfinite(total):
                parts = ", ".join(f"{name} {v:.4g}" for name, v in zip(self.output_labels, values) if v is not None)
                raise self._diverged(xb, yb, f"non-finite loss {total} ({parts})", sb)
            step = self.optimizer.iterations
            if self.recorder is not None and self.recorder.due(step):
                self.recorder.measure(step, lambda g: self._backward(g, retain_tape=True), grads)
            else:
                self._backward(grads)
            self._step(lr, lambda detail: self._diverged(xb, yb, detail, sb))
        except Exception:
            self._restore_statistics(statistics)
            if self.recorder is not None:  # nor is the refused step's gradient-norm measurement kept
                self.recorder.forget(self.optimizer.iterations)
            raise
        return total, values, outs, yb

    def _step(self, lr, diverged):
        """The optimizer step of a batch whose loss was finite, all or nothing.

        A gradient holding NaN or inf, or an update that would make a weight or the optimizer's state
        non-finite, raises :class:`TrainingDiverged` (``diverged(detail)`` builds it for a gradient, naming the
        first layer that produced a non-finite value); the weights, the optimizer's state, its step count and
        its learning rate are then as they were. :meth:`tinynet.optimizers.Optimizer.step` checks the gradients
        of every weight it updates and refuses such updates; an optimizer whose ``step`` is its own gets the
        gradients checked here first.
        """
        optimizer = self.optimizer
        if type(optimizer).step is not optimizers_module.Optimizer.step:  # a step of its own: check here
            bad = self.model.first_nonfinite_weight(values=False)
            if bad is not None:  # the update is not applied: the weights stay those of the last good step
                raise diverged(f"non-finite value in layer '{bad[0]}' ({bad[1]})")
        saved_last = self.last_lr
        saved_rate = optimizer.learning_rate if lr is not None else None  # a number here (a schedule refuses lr)
        if lr is not None:
            optimizer.learning_rate = lr
        self.last_lr = optimizer.learning_rate
        try:
            optimizer.step()  # checks everything before it changes a weight, and refuses a non-finite result
        except BaseException as error:  # any refusal (also a rate beyond the dtype): the rate is put back too
            if saved_rate is not None:
                optimizer.learning_rate = saved_rate
            self.last_lr = saved_last
            if isinstance(error, optimizers_module.NonFiniteGradientError):
                raise diverged(f"non-finite value in layer '{error.layer}' ({error.weight})") from None
            if isinstance(error, optimizers_module.NonFiniteUpdateError):
                raise TrainingDiverged(self.epoch + 1, optimizer.iterations + 1, str(error)) from None
            raise

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

    def _diverged(self, xb, yb, detail, sample_weights=None):
        """A :class:`TrainingDiverged` for this batch, naming the first layer whose value is non-finite.

        The batch is run once more with the model's finiteness checks; weights, BatchNormalization
        statistics and random generators are restored afterwards, so the diagnosis changes nothing.
        """
        first = self._diagnose(xb, yb, sample_weights)
        if first is not None:
            detail += f"; first: {first}"
        return TrainingDiverged(self.epoch + 1, self.optimizer.iterations + 1, detail)

    def _diagnose(self, xb, yb, sample_weights=None):
        """Run the batch again with the model's finiteness checks and return the first problem found (a
        string), or None; weights, statistics and generators are put back."""
        from . import checkpoint
        from .layers.base import NonFiniteError

        saved_weights = [(layer, [w.copy() for w in layer.weights]) for layer in self.model.layers if layer.weights]
        saved_rng = checkpoint.rng_states(self.model, self.rng)
        first = None
        try:
            outs = self._forward(xb, check_finite=True)
            _, _, grads = self.weighted_loss(outs, yb, sample_weights)
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
        self._step(lr, lambda detail: self._diverged_on_ranks(xb, yb, detail))
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

    def update_trackers(self, total, values, outs, ys, n, sample_weights=None):
        """Add a batch of ``n`` examples: its losses (weighted by ``n``, as Keras), its metrics, and its weighted
        metrics with ``sample_weights`` (per output, or None: unweighted)."""
        self.loss_tracker.update_state(total, sample_weight=n)
        for tracker, value in zip(self.output_trackers, values):
            if tracker is not None and value is not None:
                tracker.update_state(value, sample_weight=n)
        for per_output, out, y in zip(self.metrics, outs, ys):
            for _, metric in per_output:
                metric.update_state(y, out)
        sample_weights = [None] * len(outs) if sample_weights is None else sample_weights
        for per_output, out, y, sw in zip(self.weighted_metrics, outs, ys, sample_weights):
            for _, metric in per_output:
                if sw is None:
                    metric.update_state(y, out)
                else:
                    metric.update_state(y, out, sample_weight=sw)

    def tracker_logs(self):
        """The running values: ``loss``, each output's loss key, each metric key."""
        logs = {"loss": self.loss_tracker.result()}
        for key, tracker in zip(self.loss_keys, self.output_trackers):
            if tracker is not None:
                logs[key] = tracker.result()
        for per_output in self.metrics + self.weighted_metrics:
            for key, metric in per_output:
                logs[key] = metric.result()
        return logs

    # ------------------------------------------------------------------ epochs
    def run_epoch(self, xs, ys, epoch, batch_size, shuffle=True, callbacks=None, sample_weights=None):
        """One pass over ``(xs, ys)`` in mini-batches (a new random order when ``shuffle``), each example
        weighted by ``sample_weights`` (per output, an array ``(N,)`` or None; one process only).

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
        _refuse_distributed_weights(self, sample_weights)
        n = len(xs[0])
        steps = _num_batches(n, batch_size)
        order = self.rng.permutation(n) if shuffle else np.arange(n)
        self.reset_trackers()
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            if not self.distributed:
                xb = [a[idx] for a in xs]
                yb = _take(ys, idx)  # an array shared by several outputs is sliced once
                sb = _take(sample_weights, idx)
            callbacks.on_train_batch_begin(i)
            lr = self.schedule(epoch + i / steps) if self.schedule is not None else None
            try:
                if self.distributed:  # the global batch idx, split over the ranks (trackers updated inside)
                    self.train_global_batch(xs, ys, idx, lr)
                else:
                    total, values, outs, ydev = self.train_batch(xb, yb, lr, sb)
            except TrainingDiverged as error:
                failed = dict(self.tracker_logs(), loss=math.nan)
                callbacks.on_train_batch_end(i, failed)
                if getattr(self.model, "stop_training", False):  # TerminateOnNaN: stop, without this epoch
                    raise StoppedMidEpoch(failed) from None
                raise TrainingDiverged(epoch + 1, i + 1, error.detail) from None
            if not self.distributed:
                self.update_trackers(total, values, outs, ydev, len(idx), sb)
            callbacks.on_train_batch_end(i, self.tracker_logs())
            if getattr(self.model, "stop_training", False):
                break
        return self.tracker_logs()

    def run_epochs(self, xs, ys, start, end, batch_size, shuffle=True, validate=None, callbacks=None,
                   extras=None, sample_weights=None):
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
        sample_weights : list of arrays (N,) or None, optional
            Per output, every example's weight (see :meth:`weighted_loss`); one process only.

        Returns
        -------
        dict : the last epoch's logs (empty if none ran)
        """
        callbacks = callbacks if callbacks is not None else callbacks_module.CallbackList()
        _refuse_distributed_weights(self, sample_weights)
        if not self.distributed:
            return self._run_epochs(xs, ys, start, end, batch_size, shuffle, validate, callbacks, extras,
                                    sample_weights)
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

    def _run_epochs(self, xs, ys, start, end, batch_size, shuffle, validate, callbacks, extras,
                    sample_weights=None):
        self.model.stop_training = False
        self.model.running_engine = self  # Model.optimizer for callbacks (a Trainer's model is not compiled)
        try:
            return self._epochs(xs, ys, start, end, batch_size, shuffle, validate, callbacks, extras,
                                sample_weights)
        finally:
            self.model.running_engine = None

    def _epochs(self, xs, ys, start, end, batch_size, shuffle, validate, callbacks, extras, sample_weights=None):
        callbacks.on_train_begin()
        logs = {}
        for epoch in range(start, end):
            callbacks.on_epoch_begin(epoch)
            began = time.perf_counter()
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite values are checked
                try:
                    logs = self.run_epoch(xs, ys, epoch, batch_size, shuffle, callbacks, sample_weights)
                except StoppedMidEpoch as stop:
                    callbacks.on_train_end(stop.logs)
                    return stop.logs
                if validate is not None:
                    logs.update(validate())
            if extras is not None:
                extras(epoch, logs, time.perf_counter() - began)
            bad = self.model.first_nonfinite_weight()
            non_finite = [k for k, v in logs.items() if isinstance(v, (float, np.floating)) and not np.isfinite(v)]
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
    def evaluate_arrays(self, xs, ys, batch_size, callbacks=None, sample_weights=None):
        """Losses and metrics over ``(xs, ys)`` in inference mode (no shuffling, no augmentation), each example
        weighted by ``sample_weights`` (per output, an array ``(N,)`` or None; one process only).

        Returns
        -------
        dict : ``loss`` (the weighted total), each output's loss key, each metric key (no ``val_`` prefix).
        """
        callbacks = callbacks if callbacks is not None else callbacks_module.CallbackList()
        _refuse_distributed_weights(self, sample_weights)
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
                yb = self.prepare_labels(_take(ys, sl))
                sb = _take(sample_weights, sl)
                total, values, _ = self.weighted_loss(outs, yb, self.prepare_labels(sb))
                self.update_trackers(total, values, outs, yb, len(xb[0]), sb)
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


def _metric_spec(metrics, names, argument="metrics"):
    """Per output, the list of metric identifiers (``argument``: ``'metrics'`` or ``'weighted_metrics'``)."""
    if metrics is None:
        return [[] for _ in names]
    if isinstance(metrics, (str, metrics_module.Metric)) or callable(metrics):
        raise ValueError(f"compile: {argument} must be a list or a dict (e.g. {argument}=['accuracy']), got "
                         f"{metrics!r}")
    if len(names) == 1:
        flat = []
        items = metrics.values() if isinstance(metrics, dict) else metrics
        if isinstance(metrics, dict) and set(metrics) - set(names):
            raise ValueError(f"compile: {argument} has keys {sorted(set(metrics) - set(names))} that are not output "
                             f"names; the model's output is {names}")
        for item in items:
            flat.extend(_as_list(item) if item is not None else [])
        return [flat]
    if isinstance(metrics, (list, tuple)) and len(metrics) != len(names):
        raise ValueError(f"compile: for a model with {len(names)} outputs {names}, {argument} as a list needs one "
                         f"entry per output (a metric, a list of metrics, or None), got {len(metrics)}; or give a "
                         f"dict by output name, e.g. {{'{names[-1]}': ['accuracy']}}")
    per_output = _per_output(argument, metrics, names, None, allow_single=False)
    return [[] if item is None else _as_list(item) for item in per_output]


def _metric_keys(spec, names, weighted_spec=None):
    """Keras' log keys: the metric's name, prefixed with the output's name when there are several outputs,
    with ``_1``, ``_2``, ... for repeats. A weighted metric whose key is taken becomes ``weighted_<name>`` (then
    ``_1``, ...), as Keras 3 names it. Returns the keys of ``spec``, and of ``weighted_spec`` when given."""
    keys, seen = [], {}

    def prefixed(name, base):
        return f"{name}_{base}" if len(names) > 1 else base

    for per_output, name in zip(spec, names):
        row = []
        for identifier, metric in per_output:
            key = prefixed(name, identifier if isinstance(identifier, str) else metric.name)
            if key in seen:
                seen[key] += 1
                key = f"{key}_{seen[key] - 1}"
            else:
                seen[key] = 1
            row.append(key)
        keys.append(row)
    if weighted_spec is None:
        return keys
    weighted_keys = []
    for per_output, name in zip(weighted_spec, names):
        row = []
        for identifier, metric in per_output:
            base = identifier if isinstance(identifier, str) else metric.name
            key = prefixed(name, base)
            if key in seen:
                key = prefixed(name, f"weighted_{base}")
                if key in seen:
                    seen[key] += 1
                    key = f"{key}_{seen[key] - 1}"
                else:
                    seen[key] = 1
            else:
                seen[key] = 1
            row.append(key)
        weighted_keys.append(row)
    return keys, weighted_keys


class KerasState(Engine):
    """The engine behind a compiled :class:`tinynet.Model` (``model.compile`` builds it).

    ``'accuracy'`` metrics are resolved on the first labels seen, as Keras does.
    """

    def __init__(self, model, optimizer, losses, loss_weights, metric_ids, loss_keys, weighted_metric_ids=None):
        super().__init__(model, optimizer, losses, loss_weights, [[] for _ in losses], loss_keys)
        self.metric_ids = metric_ids
        self.weighted_metric_ids = weighted_metric_ids if weighted_metric_ids is not None \
            else [[] for _ in metric_ids]
        self.built_metrics = False
        names = output_names(model)
        # everything but 'accuracy' is built now, so unknown names fail in compile
        for per_output in self.metric_ids + self.weighted_metric_ids:
            for identifier in per_output:
                if not (isinstance(identifier, str) and identifier in metrics_module.ACCURACY_NAMES):
                    metrics_module.get(identifier)
        self.names = names

    def build_metrics(self, ys, who="fit", more=()):
        """Resolve the metrics against the labels ``ys`` (once), after checking ``ys`` and each ``(labels, what)``
        of ``more`` (validation labels) against the losses and the metrics so resolved: labels that are refused
        resolve nothing, so a corrected call is not judged by a mistaken one."""
        if self.built_metrics:
            metrics, weighted = self.metrics, self.weighted_metrics
        else:
            metrics, weighted = self._resolve_metrics(ys)
        both = [plain + extra for plain, extra in zip(metrics, weighted)]
        for labels, what in ((ys, "y"), *more):
            check_labels(self, labels, who, what, both)
        self.metrics, self.weighted_metrics, self.built_metrics = metrics, weighted, True

    def _resolve_metrics(self, ys):
        """The metrics and the weighted metrics per output, ``'accuracy'`` resolved from the shapes of ``ys``;
        nothing is kept."""
        def resolve(ids):
            spec = []
            for per_output, y, t in zip(ids, ys, self.model.outputs):
                row = []
                for identifier in per_output:
                    if isinstance(identifier, str) and identifier in metrics_module.ACCURACY_NAMES:
                        metric = metrics_module.resolve_accuracy(identifier, tuple(np.shape(y)), t.example_shape)
                    else:
                        metric = metrics_module.get(identifier)
                    row.append((identifier, metric))
                spec.append(row)
            return spec

        spec, weighted_spec = resolve(self.metric_ids), resolve(self.weighted_metric_ids)
        keys, weighted_keys = _metric_keys(spec, self.names, weighted_spec)
        return tuple([[(key, metric) for key, (_, metric) in zip(row_keys, row)] for row_keys, row in zip(k, sp)]
                     for k, sp in ((keys, spec), (weighted_keys, weighted_spec)))


def compile_model(model, optimizer, loss, loss_weights=None, metrics=None, weighted_metrics=None):
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
    weighted_metrics : list or dict, optional
        As ``metrics``; these take ``fit``'s and ``evaluate``'s sample weights (class weights included), and are
        logged after them, as ``weighted_<name>`` where the name is taken (Keras 3's keys).
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
        weighted_ids = _metric_spec(weighted_metrics, names, "weighted_metrics")
        state = KerasState(model, optimizer, losses, weights, metric_ids, loss_keys, weighted_ids)
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


def refuse_unsupported_x(x, who, what="x"):
    """Raise ``ValueError`` when ``x`` is a kind of data ``fit``, ``evaluate`` and ``predict`` do not take: a
    dataset object (:class:`tinynet.data.Dataset`, anything with ``.x`` and ``.y`` that is not an array), a
    generator or another iterator. They take arrays: one, a list with one per input, or a dict by input name."""
    kind = None
    if isinstance(x, (dict, list, tuple)) or hasattr(x, "shape") or hasattr(x, "__array__"):
        return
    if hasattr(x, "x") and hasattr(x, "y"):
        kind = f"a {type(x).__name__} (a dataset; pass its arrays: x=ds.x, y=ds.y)"
    elif hasattr(x, "__next__") or (hasattr(x, "__iter__") and not hasattr(x, "__len__")):
        kind = f"a {type(x).__name__} (generators and iterators are not supported: pass arrays)"
    if kind is not None:
        raise ValueError(f"{who}: {what} must be an array, a list of arrays (one per input) or a dict by input "
                         f"name; got {kind}")


def _read_as_one_hint(x, what, t):
    """What to tell about a list or tuple ``x`` read as the data of the single input ``t``."""
    if not isinstance(x, (list, tuple)):
        return ""
    return (f" ({what} is a {type(x).__name__} of {len(x)} items, read as the data of the model's single input "
            f"'{t.name}', as np.asarray({what}) reads it; to give data and labels, pass them apart: x=..., y=...)")


def standardize_x(model, x, who, what="x", check_values=True):
    """The input arrays as a list (one per model input), checked against the model's inputs.

    A single-input model reads a list or tuple as its data (``np.asarray(x)``), unless it is a list of one
    array of the input's rank (``[x]``); a multi-input model reads one array per input. With
    ``check_values``, every value must be finite once cast to its input's dtype
    (:func:`input_value_problem`).

    Raises
    ------
    ValueError
        Naming ``who``, ``what``, the input, and the shapes or the first bad value and its index.
    """
    inputs = model.inputs
    names = [t.name for t in inputs]
    if x is None:
        raise ValueError(f"{who}: {what} is required (arrays, one per model input)")
    refuse_unsupported_x(x, who, what)
    single = None
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
        single = x
    if len(xs) != len(inputs):
        raise ValueError(f"{who}: the model has {len(inputs)} input(s) {names}, {what} gives {len(xs)} array(s)")
    out = []
    for t, a in zip(inputs, xs):
        hint = _read_as_one_hint(single, what, t) if single is not None else ""
        if not isinstance(a, (dict, list, tuple)):
            refuse_unsupported_x(a, who, f"{what} for input '{t.name}'")
        if not backend.is_gpu_array(a):
            try:
                a = np.asarray(a)
            except (ValueError, TypeError) as error:
                raise ValueError(f"{who}: {what} for input '{t.name}' is not an array ({error}){hint}") from None
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{who}: {what} for input '{t.name}' has dtype {a.dtype}; expected numbers{hint}")
        if a.ndim == 0 or tuple(a.shape[1:]) != t.example_shape:
            raise ValueError(f"{who}: {what} for input '{t.name}' has shape {tuple(a.shape)}, the model takes "
                             f"(N, {', '.join(map(str, t.example_shape))})"
                             + (" (a channel axis is missing: add one with x[..., None])"
                                if tuple(a.shape[1:]) + (1,) == t.example_shape else "") + hint)
        out.append(a)
    sizes = {len(a) for a in out}
    if len(sizes) > 1:
        raise ValueError(f"{who}: the input arrays of {what} have different lengths {[len(a) for a in out]}")
    if check_values:
        _check_input_values(model, out, who, what)
    return out


def _beyond(a, dtype):
    """The largest finite magnitude a float ``dtype`` holds, when values of ``a``'s dtype may pass it (else
    None)."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return None
    largest = float(np.finfo(dtype).max)
    info = np.finfo(a.dtype) if a.dtype.kind == "f" else np.iinfo(a.dtype) if a.dtype.kind in "iu" else None
    return largest if info is not None and float(info.max) > largest else None


def input_value_problem(a, dtype, offset=0):
    """Why the numbers ``a`` are not all finite once cast to ``dtype`` (NaN, inf, or beyond ``dtype``'s range),
    naming the first bad value and its index (counted from ``offset`` along the first axis); else None.

    Two reductions over ``a`` when it is fine (no temporary array); the index is searched only on failure.
    """
    kind = a.dtype.kind
    if kind not in "iuf" or a.size == 0:
        return None
    xp = backend.get_array_module(a)
    largest = _beyond(a, dtype)
    high, low = float(a.max()), float(a.min())
    if kind == "f" and not (math.isfinite(high) and math.isfinite(low)):
        bad = ~xp.isfinite(a)
        index = tuple(int(i) for i in xp.argwhere(bad)[0])
        return (f"holds NaN or inf (first: {float(a[index])} at index {(index[0] + offset,) + index[1:]}); "
                f"clean the data before training")
    if largest is not None and max(high, -low) > largest:
        bad = abs(a) > largest
        index = tuple(int(i) for i in xp.argwhere(bad)[0])
        return (f"holds values beyond the range of {np.dtype(dtype)} (largest {largest:g}), which become inf once "
                f"cast to it (first: {float(a[index]):g} at index {(index[0] + offset,) + index[1:]})")
    return None


def _check_input_values(model, xs, who, what, offset=0):
    """:func:`input_value_problem` for every input array, raised as ``ValueError`` naming ``what``."""
    for t, a in zip(model.inputs, xs):
        problem = input_value_problem(a, t.dtype, offset)
        if problem is not None:
            raise ValueError(f"{who}: {what} for input '{t.name}' {problem}")


def probe_losses(state, ys, who):
    """Call every loss function (:class:`tinynet.losses.LossFunctionWrapper`) once on its first label and a
    made-up prediction (uniform over the units, the output's shape and dtype), so that a function that does not
    follow ``fn(y_pred, labels) -> (loss, gradient)`` fails here, before any callback or step, naming the
    output. Nothing of the model changes; a loss object is not probed."""
    for name, y, loss, t in zip(state.names, ys, state.losses, state.model.outputs):
        if not isinstance(loss, losses_module.LossFunctionWrapper) or y is None:
            continue
        y_pred = np.full((1,) + t.example_shape, 1.0 / t.example_shape[-1], dtype=t.dtype)
        labels = np.asarray(backend.to_numpy(y[:1]))
        where = f"{who}: loss for output '{name}'"
        try:
            with np.errstate(all="ignore"):
                _, grad = loss.value_and_grad(labels, y_pred)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where} (probed once before training, on a uniform prediction of shape "
                              f"{y_pred.shape}): {error}") from None
        if tuple(np.shape(grad)) != y_pred.shape:
            raise ValueError(f"{where}: the loss function '{loss.name}' returned a gradient of shape "
                             f"{tuple(np.shape(grad))} for a prediction of shape {y_pred.shape}; it must return "
                             f"(loss, gradient of the prediction's shape), taking (y_pred, labels) in that order")


def _by_output_name(by_name, names, who, what):
    """The values of the dict ``by_name`` in the order of the output ``names`` (None where one is missing); a key
    that names no output raises ``ValueError`` naming ``what``."""
    unknown = sorted(set(by_name) - set(names))
    if unknown:
        raise ValueError(f"{who}: {what} has keys {unknown} that are not output names; outputs: {names}")
    return [by_name.get(name) for name in names]


def standardize_y(state, y, n, who, what="y"):
    """The label arrays as a list per output (the same array for every output when one is given)."""
    names = output_names(state.model)
    if y is None:
        raise ValueError(f"{who}: {what} is required (labels for the model's output(s) {names})")
    if len(names) == 1 and isinstance(y, (list, tuple)) and len(y) == 1 and np.ndim(y[0]) >= 1 and len(y[0]) == n:
        y = y[0]  # [labels] for a single output
    if isinstance(y, dict):
        ys = _by_output_name(y, names, who, what)
    elif isinstance(y, (list, tuple)) and len(names) > 1 and len(y) == len(names) \
            and all(item is None or np.ndim(item) >= 1 for item in y) and not all(np.ndim(item) == 0 for item in y):
        ys = list(y)
    else:
        ys = [y] * len(names)
        if isinstance(y, (list, tuple)) and len(names) > 1 and len(y) != n:
            raise ValueError(f"{who}: {what} is a list of {len(y)} for {len(names)} outputs {names}; give one "
                             f"array per output, a dict by output name, or one array for all")
    out, converted = [], {}
    for name, item, loss, per_output, weighted in zip(names, ys, state.losses, state.metric_ids,
                                                      state.weighted_metric_ids):
        if item is None:
            if loss is not None or per_output or weighted:
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
    class indices in range, values finite once cast to the output's dtype (the loss compares them there)."""
    metrics = state.metrics if metrics is None else metrics
    for name, y, loss, t, per_output in zip(state.names, ys, state.losses, state.model.outputs, metrics):
        if y is None:
            continue
        host = backend.to_numpy(y)
        where = f"{who}: {what} for output '{name}'"
        if loss is not None:
            loss.check_labels(host, t.example_shape, where)
            problem = losses_module.cast_problem(host, t.dtype)  # 1e39 passes as float64, is inf as float32
            if problem is not None:
                raise ValueError(f"{where}: loss '{loss.name}': {problem}")
        for _, metric in per_output:
            metric.check_labels(host, t.example_shape, where)


def _weights_problem(w, n, x_what):
    """Why ``w`` is not one finite weight >= 0 per example of the ``n`` of ``x_what``, or None."""
    if w.dtype.kind not in "biuf":
        return f"must be numbers, got dtype {w.dtype}"
    if tuple(w.shape) not in ((n,), (n, 1)):
        extra = ("; per-position weights are not supported (one weight per example: every output position "
                 "shares it)" if w.ndim > 1 and len(w) == n else "")
        return (f"has shape {tuple(w.shape)} but {x_what} has {n} examples; give one weight per example, shape "
                f"({n},){extra}")
    w = w.reshape(n)
    if w.dtype.kind == "f" and not bool(np.isfinite(w).all()):
        i = int(np.argwhere(~np.isfinite(w))[0, 0])
        return f"holds NaN or inf (first: {w[i]} at index {i})"
    if bool((w < 0).any()):
        i = int(np.argwhere(w < 0)[0, 0])
        return f"must be >= 0, got {w[i]} at index {i}"
    return None


def standardize_sample_weight(state, sample_weight, ys, n, who, what="sample_weight"):
    """The sample weights as a list per output (float64 arrays ``(n,)``, or None), checked; None for None.

    ``sample_weight``: one array ``(n,)`` (or ``(n, 1)``) for every output that has labels, a list with one
    entry (array or None) per output, or a dict by output name. Every weight must be a finite number >= 0, and
    every output it weights must have a loss that takes sample weights; else ``ValueError`` naming ``what``, the
    output and the shapes.
    """
    if sample_weight is None:
        return None
    names = state.names
    if isinstance(sample_weight, dict):
        items = _by_output_name(sample_weight, names, who, what)
    elif isinstance(sample_weight, (list, tuple)) and len(names) > 1 and len(sample_weight) == len(names) \
            and all(item is None or np.ndim(item) >= 1 for item in sample_weight):
        items = list(sample_weight)
    else:
        if isinstance(sample_weight, (list, tuple)) and len(sample_weight) == 1 and np.ndim(sample_weight[0]) >= 1:
            sample_weight = sample_weight[0]  # [weights] for a single output
        items = [sample_weight if y is not None else None for y in ys]
    out, converted = [], {}
    for name, item, y, loss in zip(names, items, ys, state.losses):
        if item is None:
            out.append(None)
            continue
        where = f"{what} for output '{name}'" if len(names) > 1 else what
        if y is None:
            raise ValueError(f"{who}: {where} is given, but the output has no labels")
        if id(item) not in converted:
            w = np.asarray(backend.to_numpy(item))
            problem = _weights_problem(w, n, "validation_data x" if what.startswith("validation") else "x")
            if problem is not None:
                raise ValueError(f"{who}: {where} {problem}")
            converted[id(item)] = w.reshape(n).astype(np.float64)
        if loss is not None and not losses_module.accepts_sample_weight(loss):
            raise ValueError(f"{who}: {where}: loss '{loss.name}' ({type(loss).__name__}) takes no sample_weight; "
                             f"use a loss object (CategoricalCrossentropy, SparseCategoricalCrossentropy, "
                             f"BinaryCrossentropy, MeanSquaredError, MeanAbsoluteError)")
        out.append(converted[id(item)])
    return out


def check_class_weight(state, class_weight, who):
    """Check ``class_weight`` ``{class index: weight}`` (a single-output model; integer keys in [0, C), or
    {0, 1} for an output of one unit; finite weights >= 0) and return it as a table ``(C,)`` (1 for the classes
    not given, as Keras)."""
    if not isinstance(class_weight, dict):
        raise ValueError(f"{who}: class_weight must be a dict {{class index: weight}}, got "
                         f"{type(class_weight).__name__}")
    if len(state.names) != 1:
        raise ValueError(f"{who}: class_weight is only supported for a model with a single output (as in Keras); "
                         f"this one has {len(state.names)} {state.names}: give sample_weight instead")
    example_shape = state.model.outputs[0].example_shape
    units = example_shape[-1]
    classes = units if units > 1 else 2
    table = np.ones(classes)
    for key, value in class_weight.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)) or not 0 <= key < classes:
            raise ValueError(f"{who}: class_weight has the key {key!r}, which is not a class index of output "
                             f"'{state.names[0]}' (outputs of shape (N, {', '.join(map(str, example_shape))})): "
                             f"keys must be integers in [0, {classes})")
        table[int(key)] = check_number(who, f"class_weight[{key}]", value, low=0)
    return table


def class_sample_weights(state, table, ys, n, who):
    """The weight of each example from its class (``class_weight`` as :func:`check_class_weight`'s table), as
    Keras reads the class: the label (rounded) for class indices ``(N,)``/``(N, 1)`` and for an output of one
    unit, ``argmax`` for labels ``(N, C)``. Returns the list per output for :func:`fit`."""
    y = np.asarray(backend.to_numpy(ys[0]))
    ids = y
    if ids.ndim > 1:
        ids = ids.argmax(axis=-1) if ids.shape[-1] != 1 else ids[..., 0]
    if ids.shape != (n,):
        raise ValueError(f"{who}: class_weight needs one class per example, but labels of shape {tuple(y.shape)} give "
                         f"classes of shape {tuple(ids.shape)}; weight the examples with sample_weight instead")
    ids = np.round(ids).astype(np.int64)
    bad = (ids < 0) | (ids >= len(table))
    if bool(bad.any()):
        i = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"{who}: class_weight: the labels are not class indices in [0, {len(table)}) (first: "
                         f"{y[i]} at index {i})")
    return [table[ids]]


def _require_compiled(model, state, who):
    if state is None:
        raise ValueError(f"{who}: the model must be compiled first: call model.compile(optimizer=..., loss=...) "
                         f"before model.{who.split('.')[-1]}()")


def _refuse_weights_in_parallel(state, who, given):
    """``ValueError`` when data-parallel training (or evaluation) is asked to weight examples."""
    if state.distributed and given:
        raise ValueError(f"{who}: {' and '.join(given)} are not supported in data-parallel (MPI) training: train in "
                         f"one process (distributed=False) to weight examples")


def check_callbacks(who, callbacks):
    """``ValueError`` naming ``who`` unless ``callbacks`` is None or a list (tuple) of Callback objects."""
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"{who}: callbacks must be a list of tinynet.callbacks.Callback, got "
                         f"{type(callbacks).__name__}")
    for cb in callbacks or []:
        if not isinstance(cb, callbacks_module.Callback):
            raise ValueError(f"{who}: callbacks must be tinynet.callbacks.Callback objects, got {type(cb).__name__}")


def fit(model, state, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
        validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
        initial_epoch=0, distributed=None):
    """``Model.fit``: check every argument, then run :meth:`Engine.run_epochs`; return the ``History``.

    ``distributed`` (True, a :class:`tinynet.distributed.Communicator` or an mpi4py communicator; False for one
    process; None keeps what :func:`tinynet.distributed.distribute` set) trains data-parallel, with
    ``batch_size`` the global batch. ``sample_weight`` (see :func:`standardize_sample_weight`) or ``class_weight``
    (see :func:`check_class_weight`) weight the training examples, as Keras; ``validation_data`` may carry the
    validation examples' weights as a third item. Weights are for one process: refused with ``distributed``.

    Checked before any callback runs: every argument; ``x``, the validation inputs (``validation_data``'s or
    ``validation_split``'s part) and the labels hold no NaN or inf, nor values beyond the dtype of the input or
    output they feed (``ValueError`` naming the argument, the input or output and the first bad index); a
    loss function is called once on a made-up prediction (:func:`probe_losses`).
    """
    who = "fit"
    _require_compiled(model, state, who)
    if distributed is not None:
        from . import distributed as distributed_module

        state.set_communicator(distributed_module.get_communicator(distributed))
    if sample_weight is not None and class_weight is not None:
        raise ValueError(f"{who}: give sample_weight or class_weight, not both (as Keras)")
    val_weight = validation_data[2] if isinstance(validation_data, (list, tuple)) and len(validation_data) == 3 \
        else None
    _refuse_weights_in_parallel(state, who, [name for name, v in (("sample_weight", sample_weight), (
        "class_weight", class_weight), ("validation sample weights", val_weight)) if v is not None])
    table = None if class_weight is None else check_class_weight(state, class_weight, who)
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
    check_callbacks(who, callbacks)
    xs = standardize_x(model, x, who, check_values=False)  # checked below, once the validation part is known
    n = len(xs[0])
    if n == 0:
        raise ValueError(f"{who}: x is empty (0 examples)")
    ys = standardize_y(state, y, n, who)
    sws = standardize_sample_weight(state, sample_weight, ys, n, who)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (list, tuple)) or len(validation_data) not in (2, 3):
            raise ValueError(f"{who}: validation_data must be a tuple (x_val, y_val) or (x_val, y_val, "
                             f"sample_weight_val), got {type(validation_data).__name__}"
                             + (f" of {len(validation_data)}" if isinstance(validation_data, (list, tuple)) else ""))
        vx = standardize_x(model, validation_data[0], who, "validation_data x")
        if len(vx[0]) == 0:
            raise ValueError(f"{who}: validation_data is empty (0 examples)")
        vy = standardize_y(state, validation_data[1], len(vx[0]), who, "validation_data y")
        val = (vx, vy, standardize_sample_weight(state, val_weight, vy, len(vx[0]), who,
                                                 "validation_data sample_weight"))
    elif validation_split > 0:
        split = int(math.floor(n * (1.0 - validation_split)))
        if split == 0 or split == n:
            raise ValueError(f"{who}: validation_split={validation_split:g} of {n} examples leaves "
                             f"{'no training' if split == 0 else 'no validation'} examples")
        # the last examples, their labels and their weights (Keras splits sample_weight too)
        val = ([a[split:] for a in xs], _take(ys, slice(split, None)), _take(sws, slice(split, None)))
        xs = [a[:split] for a in xs]
        ys = _take(ys, slice(None, split))
        sws = _take(sws, slice(None, split))
        n = split
    _check_input_values(model, xs, who, "x")
    if val is not None and validation_data is None:
        _check_input_values(model, val[0], who, f"x (its last {len(val[0][0])} examples, held out by "
                                                f"validation_split)", offset=n)
    more = () if val is None else ((val[1], "validation_data y" if validation_data is not None else "y (validation)"),)
    state.build_metrics(ys, who, more)
    probe_losses(state, ys, who)
    if table is not None:  # from the training labels alone, once they are checked (Keras weights no validation)
        sws = class_sample_weights(state, table, ys, n, who)
    steps = _num_batches(n, batch_size)
    cbs = callbacks_module.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=model,
                                        verbose=verbose, epochs=epochs, steps=steps)
    state.batch_size = batch_size

    def validate():
        logs = state.evaluate_arrays(val[0], val[1], batch_size, callbacks=cbs, sample_weights=val[2])
        return {f"val_{k}": v for k, v in logs.items()}

    try:
        state.run_epochs(xs, ys, initial_epoch, epochs, batch_size, shuffle=bool(shuffle),
                         validate=validate if val is not None else None, callbacks=cbs, sample_weights=sws)
    finally:
        for cb in cbs:
            if isinstance(cb, callbacks_module.ProgbarLogger):
                cb.close()
    return cbs.history


def evaluate(model, state, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, return_dict=False,
             callbacks=None):
    """``Model.evaluate``: the loss (and metrics) in inference mode, as Keras returns them; ``sample_weight``
    weights the losses and the weighted metrics (one process only)."""
    who = "evaluate"
    _require_compiled(model, state, who)
    verbose = _verbose(who, verbose)
    check_callbacks(who, callbacks)
    batch_size = 32 if batch_size is None else _positive_int(who, "batch_size", batch_size)
    xs, ys, sws = _batch_arrays(model, state, x, y, who, sample_weight)
    cbs = callbacks_module.CallbackList(callbacks, add_progbar=verbose != 0, model=model, verbose=verbose,
                                        steps=_num_batches(len(xs[0]), batch_size), evaluating=True)
    return _returned(state.evaluate_arrays(xs, ys, batch_size, callbacks=cbs, sample_weights=sws), return_dict)


def _batch_arrays(model, state, x, y, who, sample_weight=None, class_weight=None):
    """``x``, ``y`` and the sample weights (from ``sample_weight`` or ``class_weight``) as lists, checked as
    :func:`fit` checks them (metrics resolved from ``y``)."""
    _require_compiled(model, state, who)
    if sample_weight is not None and class_weight is not None:
        raise ValueError(f"{who}: give sample_weight or class_weight, not both (as Keras)")
    _refuse_weights_in_parallel(state, who, [name for name, v in (("sample_weight", sample_weight),
                                                                  ("class_weight", class_weight)) if v is not None])
    table = None if class_weight is None else check_class_weight(state, class_weight, who)
    xs = standardize_x(model, x, who)
    n = len(xs[0])
    if n == 0:
        raise ValueError(f"{who}: x is empty (0 examples)")
    ys = standardize_y(state, y, n, who)
    sws = standardize_sample_weight(state, sample_weight, ys, n, who)
    state.build_metrics(ys, who)
    probe_losses(state, ys, who)
    if table is not None:
        sws = class_sample_weights(state, table, ys, n, who)
    return xs, ys, sws


def _returned(logs, return_dict):
    """What Keras' ``evaluate``/``train_on_batch`` return: the logs, or their values (one alone as a number)."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def train_on_batch(model, state, x=None, y=None, sample_weight=None, class_weight=None, return_dict=False):
    """``Model.train_on_batch``: one optimizer step on the batch ``(x, y)`` (its examples weighted by
    ``sample_weight`` or ``class_weight``, as :func:`fit`), checked as :func:`fit` checks its arguments; return
    this batch's loss and metrics (as Keras since 2026, not running means over the calls).

    The step is :meth:`Engine.train_batch` (or, data-parallel, :meth:`Engine.train_global_batch` over the whole
    batch): a non-finite loss or gradient, or an update that would make a weight non-finite, raises
    :class:`TrainingDiverged` and changes nothing. The loss and the
    metrics are those of the training-mode forward that the step differentiated (Dropout on, BatchNormalization
    on the batch's statistics), before the update.
    """
    who = "train_on_batch"
    xs, ys, sws = _batch_arrays(model, state, x, y, who, sample_weight, class_weight)
    state.reset_trackers()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite values are checked
        try:
            if state.distributed:
                state.train_global_batch(xs, ys, np.arange(len(xs[0])))
            else:
                total, values, outs, ydev = state.train_batch(xs, ys, sample_weights=sws)
                state.update_trackers(total, values, outs, ydev, len(xs[0]), sws)
        except TrainingDiverged as error:
            raise TrainingDiverged(state.epoch + 1, state.optimizer.iterations + 1, error.detail) from None
    return _returned(state.tracker_logs(), return_dict)


def test_on_batch(model, state, x=None, y=None, sample_weight=None, return_dict=False):
    """``Model.test_on_batch``: the loss and metrics of the batch ``(x, y)`` in inference mode, as
    :func:`evaluate` with the whole batch at once (``sample_weight`` as there)."""
    xs, ys, sws = _batch_arrays(model, state, x, y, "test_on_batch", sample_weight)
    return _returned(state.evaluate_arrays(xs, ys, len(xs[0]), sample_weights=sws), return_dict)


__all__ = ["Engine", "KerasState", "TrainingDiverged", "StoppedMidEpoch", "compile_model", "fit", "evaluate",
           "train_on_batch", "test_on_batch", "check_number", "output_names", "standardize_x", "standardize_y",
           "standardize_sample_weight", "check_class_weight", "class_sample_weights", "check_labels",
           "refuse_unsupported_x", "input_value_problem", "probe_losses"]
