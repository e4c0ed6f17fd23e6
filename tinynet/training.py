"""The training loop: mini-batches, the auxiliary-weighted loss, validation, history, curves and gradient norms.

One step on a batch ``(x, y)`` of a model with outputs ``[aux1, aux2, main]``:

.. math:: L = w_{aux} L_{aux1} + w_{aux} L_{aux2} + L_{main}, \\qquad w_{aux} = 0.3 \\text{ (the paper)}

then ``model.backward(∂L/∂outputs)`` and ``optimizer.step()``. Evaluation reads the main (last) output only:
the aux heads are a training device. Everything random (shuffling, augmentation, Dropout, the global
generator) is a seeded NumPy generator whose state a checkpoint saves, so a run is repeatable on CPU and
a resumed run matches an uninterrupted one bit for bit (see :mod:`tinynet.checkpoint`).

Examples
--------
>>> trainer = Trainer(model, SGD(0.05, momentum=0.9), schedule=StepDecay(0.05), preprocess=Normalizer.fit(x))
>>> history = trainer.fit(train, test, epochs=10)
>>> trainer.evaluate(test)['top1']
"""
from __future__ import annotations

import time

import numpy as np

from . import backend, data as data_module, losses
from .grad_norms import GradNormRecorder, grad_norm_table, group_grad_norms, layer_groups  # noqa: F401 (re-exported)
from .optim import Constant, get_schedule
from .plots import plot_grad_norms, plot_history  # noqa: F401 (re-exported)


class TrainingDiverged(FloatingPointError):
    """Training met a non-finite loss, gradient or weight and stopped before using it.

    The optimizer step of the failing batch is not applied and no checkpoint is written from it, so the
    last checkpoint on disk is the last good state.

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


def _check_number(name, value, low=None, high=None, integer=False, low_open=False):
    """Raise ``ValueError`` unless ``value`` is a finite number in the range (integers when asked)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (low is None or (value > low if low_open else value >= low)) \
            and (high is None or value <= high)
    if not ok:
        bound = ("" if low is None else f" {'>' if low_open else '>='} {low:g}") + \
                ("" if high is None else f" and <= {high:g}")
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"Trainer: {name} must be {kind}{bound}, got {value!r}")
    return int(value) if integer else value


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


class Trainer:
    """Trains a tinynet model whose last output is the main classifier and earlier outputs are aux heads.

    Parameters
    ----------
    model : tinynet.Model
        Outputs are softmax probabilities; the last one is the main head.
    optimizer : tinynet.optim.Optimizer
        Attached to the model here (so its state follows ``model.to``).
    schedule : tinynet.optim.Schedule, optional
        Learning rate per (fractional) epoch; default: the optimizer's lr, constant.
    aux_weight : float, default 0.3
        Loss weight of every output but the last (the paper's 0.3); ``loss_weights`` overrides it.
    loss_weights : list of float, optional
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
                 preprocess=None, augment=None, seed=0, verbose=True, grad_norm_groups=None, grad_norm_every=5):
        self.model = model
        self.optimizer = optimizer.attach(model)
        self.schedule = get_schedule(schedule) if schedule is not None else Constant(optimizer.lr)
        n_out = len(model.outputs)
        if loss_weights is None:
            loss_weights = [_check_number("aux_weight", aux_weight, low=0)] * (n_out - 1) + [1.0]
        self.loss_weights = [_check_number("loss_weights", w, low=0) for w in loss_weights]
        if len(self.loss_weights) != n_out:
            raise ValueError(f"Trainer: {n_out} outputs but {len(self.loss_weights)} loss weights")
        self.heads = head_names(model)
        self.batch_size = _check_number("batch_size", batch_size, low=1, integer=True)
        self.preprocess = preprocess
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.verbose = verbose
        self.epoch = 0
        self.history = {}
        self.grad_norm_every = _check_number("grad_norm_every", grad_norm_every, low=1, integer=True)
        self._recorder = GradNormRecorder(model, grad_norm_groups, self.grad_norm_every) if grad_norm_groups else None

    @property
    def grad_norms(self):
        """The gradient-norm record (see :class:`tinynet.grad_norms.GradNormRecorder`), or None."""
        return self._recorder.record if self._recorder is not None else None

    @grad_norms.setter
    def grad_norms(self, record):
        if self._recorder is None:
            raise ValueError("Trainer: this trainer records no gradient norms (grad_norm_groups=None)")
        self._recorder.record = record

    # ------------------------------------------------------------------ one batch
    def _prepare(self, x, training):
        if training and self.augment is not None:
            x = self.augment(x, self.rng)
        if self.preprocess is not None:
            x = self.preprocess(x)
        x = np.asarray(x, dtype=self.model.inputs[0].dtype)
        return backend.to_device(x, self.model.device)

    def train_step(self, x, y, lr):
        """Forward, weighted loss, backward and one optimizer step on a batch.

        Returns
        -------
        total : float, losses : list of float (one per head, unweighted), correct : int (main head, top-1)
        """
        if len(y) == 0 or len(x) != len(y):
            raise ValueError(f"Trainer.train_step: a batch needs images and as many labels, got {len(x)} images "
                             f"and {len(y)} labels")
        xb = self._prepare(x, training=True)
        outs = self.model.forward(xb, training=True)
        as_list = isinstance(outs, list)  # a model built with a single output tensor returns one array
        outs = outs if as_list else [outs]
        yb = backend.to_device(np.asarray(y), self.model.device)
        total, head_losses, grads = losses.weighted_loss(outs, yb, self.loss_weights)

        def backward(output_grads, check_finite=False):
            self.model.backward(output_grads if as_list else output_grads[0], check_finite=check_finite)

        if not np.isfinite(total):
            heads = ", ".join(f"{h} {v:.4g}" for h, v in zip(self.heads, head_losses))
            raise self._diverged(xb, yb, f"non-finite loss {total} ({heads})")

        step = self.optimizer.iterations
        if self._recorder is not None and self._recorder.due(step):
            self._recorder.measure(step, backward, grads)
        else:
            backward(grads)
        bad = self.model.first_nonfinite_weight()
        if bad is not None:  # the update is not applied: the weights stay those of the last good step
            raise self._diverged(xb, yb, f"non-finite value in layer '{bad[0]}' ({bad[1]})")
        self.optimizer.lr = lr
        self.optimizer.step()
        pred = backend.to_numpy(outs[-1]).reshape(len(y), -1).argmax(axis=1)
        return total, head_losses, int((pred == np.asarray(y)).sum())

    def _diverged(self, xb, yb, detail):
        """A :class:`TrainingDiverged` for this batch, naming the first layer whose value is non-finite.

        The batch is run once more with the model's finiteness checks; weights, BatchNormalization
        statistics and random generators are restored afterwards, so the diagnosis changes nothing.
        """
        from . import checkpoint
        from .layers.base import NonFiniteError

        saved_weights = [(layer, [w.copy() for w in layer.weights]) for layer in self.model.layers if layer.weights]
        saved_rng = checkpoint.rng_states(self.model, self.rng)
        first = None
        try:
            outs = self.model.forward(xb, training=True, check_finite=True)
            outs = outs if isinstance(outs, list) else [outs]
            _, _, grads = losses.weighted_loss(outs, yb, self.loss_weights)
            self.model.backward(grads if len(outs) > 1 else grads[0], check_finite=True)
        except NonFiniteError as error:
            first = str(error)
        finally:
            for layer, weights in saved_weights:  # as they were, non-finite values included
                layer.assign_prepared_weights(weights)
            checkpoint.set_rng_states(self.model, saved_rng, self.rng)
        if first is not None:
            detail += f"; first: {first}"
        return TrainingDiverged(self.epoch + 1, self.optimizer.iterations + 1, detail)

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, train):
        """One pass over ``train`` (a :class:`tinynet.data.Dataset`) in a shuffled order; returns its metrics."""
        from tqdm.auto import tqdm

        n = len(train)
        steps = data_module.num_batches(n, self.batch_size)
        sums = np.zeros(len(self.heads) + 1)
        correct, seen = 0, 0
        bar = tqdm(total=steps, desc=f"epoch {self.epoch + 1}", unit="batch", disable=not self.verbose,
                   leave=False, dynamic_ncols=True)
        batches = data_module.iterate_batches(train.x, train.y, self.batch_size, shuffle=True, rng=self.rng)
        for i, (xb, yb) in enumerate(batches):
            lr = self.schedule(self.epoch + i / steps)
            try:
                total, head_losses, c = self.train_step(xb, yb, lr)
            except TrainingDiverged as error:
                bar.close()
                raise TrainingDiverged(self.epoch + 1, i + 1, error.detail) from None
            sums += np.array([total] + head_losses) * len(yb)
            correct, seen = correct + c, seen + len(yb)
            means = sums / seen
            postfix = {"loss": f"{means[0]:.3f}"}
            postfix.update({h: f"{v:.3f}" for h, v in zip(self.heads, means[1:])} if len(self.heads) > 1 else {})
            postfix["acc"] = f"{correct / seen:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
        bar.close()
        means = sums / max(seen, 1)
        metrics = {"lr": lr, "loss": float(means[0]), "acc": correct / max(seen, 1)}
        metrics.update({f"loss_{h}": float(v) for h, v in zip(self.heads, means[1:])})
        return metrics

    def evaluate(self, dataset, batch_size=None):
        """Loss and accuracy of the main (last) output on ``dataset``; aux heads are ignored.

        Returns
        -------
        dict with ``loss``, ``top1`` and, when there are more than 5 classes, ``top5``.
        """
        probs = self.predict(dataset.x, batch_size)
        loss, _ = losses.categorical_crossentropy(probs, dataset.y)
        out = {"loss": float(loss), "top1": topk_accuracy(probs, dataset.y, 1)}
        if probs.shape[-1] > 5:
            out["top5"] = topk_accuracy(probs, dataset.y, 5)
        return out

    def predict(self, x, batch_size=None):
        """Main-head probabilities (N, classes) as a NumPy array (inference mode, preprocessing applied)."""
        xb = self._prepare(x, training=False)
        outs = self.model.predict(xb, batch_size=batch_size or max(self.batch_size, 128))
        outs = outs if isinstance(outs, list) else [outs]
        return backend.to_numpy(outs[-1]).reshape(len(x), -1)

    def check_dataset(self, dataset, what="train"):
        """Raise ``ValueError`` before training when ``dataset`` does not fit the model.

        Checks that it is not empty, that its images have the model input's shape and that its labels are
        integers in ``[0, classes)`` of the main output, naming what differs.
        """
        if len(dataset) == 0:
            raise ValueError(f"Trainer: the {what} set is empty")
        expected = tuple(self.model.inputs[0].example_shape)
        if tuple(dataset.x.shape[1:]) != expected:
            raise ValueError(f"Trainer: the {what} images have shape {tuple(dataset.x.shape[1:])}, the model takes "
                             f"{expected}")
        classes = int(np.prod(self.model.outputs[-1].example_shape))
        y = np.asarray(dataset.y)
        if y.ndim != 1 or y.dtype.kind not in "iu" or int(y.min()) < 0 or int(y.max()) >= classes:
            raise ValueError(f"Trainer: the {what} labels must be class indices in [0, {classes}) for the model's "
                             f"{classes} outputs; got dtype {y.dtype}, shape {y.shape}, range "
                             f"{y.min()}..{y.max()}")

    def fit(self, train, val=None, epochs=10, checkpoint_dir=None, checkpoint_config=None):
        """Train until ``epochs`` epochs are done in total (a resumed trainer continues from ``self.epoch``).

        Parameters
        ----------
        train, val : tinynet.data.Dataset
        epochs : int
            Total number of epochs (not additional ones).
        checkpoint_dir : str, optional
            Save a checkpoint there after every epoch (see :mod:`tinynet.checkpoint`).
        checkpoint_config : dict, optional
            JSON-able description stored with the checkpoint (e.g. how to rebuild the model).

        Returns
        -------
        dict : :attr:`history`
        """
        from tqdm.auto import tqdm

        epochs = _check_number("epochs", epochs, low=0, integer=True)
        self.check_dataset(train, "train")
        if val is not None:
            self.check_dataset(val, "validation")
        while self.epoch < epochs:
            start = time.perf_counter()
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite values are checked
                metrics = self.train_epoch(train)
                if val is not None:
                    metrics.update({f"val_{'acc' if k == 'top1' else k}": v
                                    for k, v in self.evaluate(val).items()})
            bad = self.model.first_nonfinite_weight()
            non_finite = [k for k, v in metrics.items() if isinstance(v, float) and not np.isfinite(v)]
            if bad is not None or non_finite:  # never record, or checkpoint, a state that is not finite
                detail = (f"non-finite value in layer '{bad[0]}' ({bad[1]})" if bad is not None
                          else f"non-finite {', '.join(non_finite)}")
                raise TrainingDiverged(self.epoch + 1, None, detail)
            self.epoch += 1
            metrics["epoch"] = self.epoch
            metrics["time"] = time.perf_counter() - start
            for k, v in metrics.items():
                self.history.setdefault(k, []).append(v)
            if self.verbose:
                tqdm.write(self._epoch_line(metrics, epochs))
            if checkpoint_dir is not None:
                from . import checkpoint

                checkpoint.save(checkpoint_dir, self, config=checkpoint_config)
        return self.history

    def _epoch_line(self, m, epochs):
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
