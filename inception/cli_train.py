"""``python -m inception train | evaluate | predict``: train a GoogLeNet on digits (default) or your own data.

``python -m inception train`` with no arguments trains the small GoogLeNet (:mod:`inception.small`) on
scikit-learn's digits (no download) and ends with the line ``test accuracy: 0.9xxx``. With ``--checkpoint DIR``
every epoch is saved there (weights, optimizer, schedule, random states, and the model's description), so
``--resume`` continues exactly and ``evaluate`` / ``predict`` rebuild the model from ``DIR`` alone.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .cli_common import (CliError, CommandFailed, OneLineParser, agree, check_input_file, check_output_file,
                         escape, fraction, non_negative_float, non_negative_int, path_text, positive_float,
                         positive_int, run_command)
from .variants import VARIANTS

#: Defaults of ``train``, chosen on the digits: 15 epochs of 45 batches on all 1,438 training images (675 steps;
#: the main job's label smoothing of 0.1 is in RUN_DEFAULTS). Over the seeds 0-7 they gave a mean test accuracy of
#: 0.9840 (seed 0, the default: 0.9916), 0.9798 without the smoothing; the seeds' spread is as large as any
#: setting's effect (the README has the figures and the times).
DEFAULTS = {"epochs": 15, "batch_size": 32, "lr": 0.002, "optimizer": "adam", "schedule": "cosine",
            "kernels": None}


# ------------------------------------------------------------------------------------------ building
def build_model(variant, input_shape, num_classes, aux=True):
    """The GoogLeNet ``variant`` (a name in :data:`inception.variants.VARIANTS`) for ``input_shape`` and
    ``num_classes``; an unknown name raises ValueError listing the names."""
    from .googlenet import googlenet

    return googlenet(input_shape=tuple(input_shape), num_classes=num_classes, aux=aux, variant=variant)


def make_optimizer(name, lr, momentum=0.9, nesterov=False, weight_decay=0.0):
    from tinynet import optim

    if name == "sgd":
        return optim.SGD(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    return optim.Adam(lr, weight_decay=weight_decay)


def make_schedule(name, lr, epochs):
    from tinynet import optim

    if name == "step":
        return optim.StepDecay(lr, factor=0.96, every=8)
    if name == "cosine":
        return optim.CosineDecay(lr, epochs)
    return optim.Constant(lr)


def load_data(source, image_size, seed=0):
    """``(train, test)`` of ``source`` ('digits' or a path), resized to ``image_size`` if given."""
    from tinynet import data

    return data.load_dataset(source, image_size=image_size, seed=seed)


def _set_kernels(name):
    if name:
        from tinynet import backend

        backend.set_cpu_kernels(name)


# ------------------------------------------------------------------------------------------ train
#: flags that describe the run; on ``--resume`` they come from the checkpoint, and a flag given with another
#: value is refused. (flag, config key) — ``epochs`` may change and is only reported.
RUN_FLAGS = [("variant", "variant"), ("data", "data"), ("image_size", "image_size"), ("optimizer", "optimizer"),
             ("lr", "lr"), ("schedule", "schedule"), ("batch_size", "batch_size"),
             ("weight_decay", "weight_decay"), ("aux_weight", "aux_weight"), ("no_aux", "no_aux"),
             ("crop", "crop"), ("flip", "flip"), ("seed", "seed"), ("validation_split", "validation_split"),
             ("label_smoothing", "label_smoothing")]
RUN_DEFAULTS = {"variant": "small", "data": "digits", "image_size": None, "weight_decay": 0.0, "aux_weight": 0.3,
                "no_aux": False, "crop": 2, "flip": False, "seed": 0,
                "validation_split": 0.0, "label_smoothing": 0.1, **DEFAULTS}
#: run settings added after the first checkpoints were written, with the value those runs trained with: a
#: checkpoint that does not record one resumes with it
RUN_ADDED = {"label_smoothing": 0.0}

MAX_IMAGE_SIZE = 2048
MAX_EPOCHS = 100_000
#: the most channels an image may have: ``train`` refuses more, a checkpoint describing more is refused (a
#: forged ``input_shape`` must not make the first convolution's kernel exhaust the memory)
MAX_CHANNELS = 4096

#: the checks of the run's numeric flags (used by the parser and for the values a checkpoint stores)
RUN_TYPES = {"epochs": positive_int(MAX_EPOCHS), "batch_size": positive_int(65_536),
             "lr": positive_float(float(np.finfo(np.float32).max)),  # beyond it, float32 weights turn infinite
             "weight_decay": fraction(), "aux_weight": non_negative_float(100.0),
             "image_size": positive_int(MAX_IMAGE_SIZE), "crop": non_negative_int(64),
             "seed": non_negative_int(2**32 - 1), "validation_split": fraction(), "label_smoothing": fraction()}
RUN_CHOICES = {"variant": list(VARIANTS), "optimizer": ["sgd", "adam"], "schedule": ["step", "cosine", "constant"]}


def _stored_value_problem(name, value):
    """Why a run setting read from a checkpoint is not one the command line could have given, or None."""
    if name in RUN_CHOICES:
        return None if value in RUN_CHOICES[name] else f"not one of {', '.join(RUN_CHOICES[name])}"
    if name in ("no_aux", "flip"):
        return None if isinstance(value, bool) else "not true or false"
    if name == "data":
        return None if isinstance(value, str) and value else "not a path or 'digits'"
    if name == "image_size" and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "not a number"
    try:
        RUN_TYPES[name](repr(value))
    except argparse.ArgumentTypeError as error:
        return str(error)
    return None


def _short(value, limit=40):
    """:func:`tinynet.checks.short_repr` at this module's limit of 40 characters."""
    from tinynet.checks import short_repr

    return short_repr(value, limit)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _image_shape_problem(shape):
    """Why images of ``shape`` ``[height, width, channels]`` cannot be a run's input, or None.

    One rule for both ends: ``train`` refuses data of such images before any work, and the commands that read a
    checkpoint (``evaluate``, ``predict``, ``train --resume``) refuse a description of them, so that every run
    ``train`` finishes is one they accept.
    """
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(_is_int(d) for d in shape):
        return "not [height, width, channels] as integers"
    height, width, channels = shape
    if not (1 <= height <= MAX_IMAGE_SIZE and 1 <= width <= MAX_IMAGE_SIZE):
        return f"height and width must be 1..{MAX_IMAGE_SIZE}"
    if not 1 <= channels <= MAX_CHANNELS:
        return f"the channels must be 1..{MAX_CHANNELS}"
    return None


def _flag(name):
    return "--" + name.replace("_", "-")


def _data_key(source):
    """``'digits'`` or the absolute path, so a run is recognised from any working directory."""
    return source if source == "digits" else os.path.abspath(source)


def _data_fingerprint(train, test):
    """A SHA-256 of the images, labels and class names (resuming on other data is refused)."""
    import hashlib

    digest = hashlib.sha256()
    for part in (train, test):
        digest.update(str((part.x.shape, str(part.x.dtype), part.class_names)).encode())
        for array in (part.x, part.y):  # hashed in place (tobytes() held a second copy of every image)
            digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _lock_checkpoint(args, status):
    """Take the ``--checkpoint`` folder's exclusive lock for the whole run (:func:`tinynet.fileio.lock_folder`);
    return the folder's status, read again under the lock.

    Two runs saving into one folder would delete each other's files (each save removes the data files its
    manifest does not name): the second run is refused in one line before any work. A folder that does not exist
    yet is made first (its parent must exist and be writable, as a save needs), so that it can be locked; it is
    removed again if the run ends before its first save (:func:`_release_checkpoint`). The lock is the kernel's:
    it ends with the process, also after a crash or a kill. ``evaluate`` and ``predict`` take no lock: they only
    read, a checkpoint is committed by its manifest, written last, and a save that removes the files they were
    reading makes them fail in one line (run them again), never read a mix.
    """
    from tinynet import checkpoint, fileio

    directory = args.checkpoint
    args.checkpoint_created = False
    if status == "absent":
        parent = os.path.dirname(os.path.abspath(directory))
        if not os.path.isdir(parent):
            raise CliError(f"--checkpoint {directory}: the folder {parent} does not exist")
        try:
            fileio.check_new_folder_names(directory)
            checkpoint.check_writable(directory)
        except checkpoint.CheckpointError as error:
            raise CliError(f"--checkpoint {error}") from None
        except OSError as error:
            raise CliError(f"--checkpoint {directory}: {error.strerror or error}") from None
        try:
            os.mkdir(directory)
            args.checkpoint_created = True
        except FileExistsError:  # another run made it meanwhile: its lock decides below
            pass
        except OSError as error:
            raise CliError(f"--checkpoint {directory}: cannot make the folder ({error.strerror or error})") from None
    try:
        args.checkpoint_lock = fileio.lock_folder(directory)
    except BlockingIOError:
        raise CliError(f"--checkpoint {directory}: another run is using this folder (it holds the folder's lock); "
                       f"wait for it to end, or choose another folder") from None
    except OSError as error:
        raise CliError(f"--checkpoint {directory}: cannot lock the folder ({error.strerror or error})") from None
    return checkpoint.status(directory)


def _release_checkpoint(args):
    """Give up the ``--checkpoint`` folder's lock; remove the folder if this run made it and left it empty (a run
    that ended before its first save leaves no folder behind, as before there was a lock)."""
    lock = getattr(args, "checkpoint_lock", None)
    if getattr(args, "checkpoint_created", False):
        args.checkpoint_created = False
        try:
            if not os.listdir(args.checkpoint):
                os.rmdir(args.checkpoint)
        except OSError:
            pass
    if lock is not None:
        args.checkpoint_lock = None
        lock.release()


def _checkpoint_plan(args, lock=True):
    """Decide, before anything is loaded or built, what ``--checkpoint``/``--resume``/``--overwrite`` mean.

    Returns the checkpoint's state to resume from, or None for a new run. Raises :class:`CliError` for a folder
    that is a file, a folder another run holds (``lock``: the folder's lock is taken for the whole run, see
    :func:`_lock_checkpoint`; only rank 0 of a ``--distributed`` job writes, and locks), a checkpoint that would
    be replaced without ``--overwrite``, ``--resume`` on files that are not a readable checkpoint, or a folder
    where no checkpoint can be written: every mode writes there (``--resume`` and ``--overwrite`` included), so
    that is found now, not after the data is loaded and the model built (nothing is touched in any of these
    cases).
    """
    from tinynet import checkpoint

    directory = args.checkpoint
    if directory is None:
        if args.resume:
            raise CliError("--resume needs --checkpoint DIR")
        if args.overwrite:
            raise CliError("--overwrite needs --checkpoint DIR")
        return None
    if args.resume and args.overwrite:
        raise CliError("--resume and --overwrite contradict each other: continue the checkpoint, or replace it")
    status = checkpoint.status(directory)
    if status == "not a folder":
        raise CliError(f"--checkpoint {directory}: is a file, not a folder")
    if lock:
        status = _lock_checkpoint(args, status)
    state, fresh = None, False
    if status == "checkpoint":
        state = checkpoint.read_state(directory)
        if not (args.resume or args.overwrite):
            config = state.get("config", {})
            data = config.get("data")
            data = data if isinstance(data, str) and len(data) <= 200 else _short(data, 200)
            raise CliError(f"--checkpoint {directory} already holds a checkpoint (epoch {_short(state.get('epoch'))}"
                           f", {_short(config.get('variant'))} on {data}); pass --resume to continue it or "
                           f"--overwrite to replace it")
    elif status == "unreadable":
        try:
            checkpoint.verify(directory)
            reason = "unknown reason"
        except checkpoint.CheckpointError as error:
            reason = str(error)
        if args.resume:
            raise CliError(f"--resume: {directory} holds no readable checkpoint ({reason}); nothing was changed")
        if not args.overwrite:
            raise CliError(f"--checkpoint {directory} holds files but no readable checkpoint ({reason}); choose "
                           f"an empty or new folder, or pass --overwrite")
    else:
        orphans = checkpoint.orphaned_data(directory) if status == "empty" else []
        if orphans and not (args.resume or args.overwrite):
            raise CliError(f"--checkpoint {directory} holds checkpoint data files but no {checkpoint.STATE_FILE} "
                           f"({', '.join(orphans)}: a first save that was interrupted, or a manifest that was "
                           f"removed); pass --overwrite to replace them, or choose another folder")
        parent = os.path.dirname(os.path.abspath(directory))
        if status == "absent" and not os.path.isdir(parent):
            raise CliError(f"--checkpoint {directory}: the folder {parent} does not exist")
        fresh = args.resume  # 'absent' or 'empty': a job restarted before its first save starts from scratch
    try:  # every mode writes into the folder: a read-only one is refused before any work
        checkpoint.check_writable(directory)
    except checkpoint.CheckpointError as error:
        raise CliError(f"--checkpoint {error}") from None
    if fresh:
        print(f"no checkpoint in {escape(directory)} yet: starting from scratch")
    return state if args.resume else None


def _settings(args, resume_state):
    """The run's settings: defaults, then the checkpoint's (on resume), then the flags given on the command line.

    On resume a flag given with a value other than the checkpoint's is refused, listing every difference.
    """
    given = {name: getattr(args, name) for name, _ in RUN_FLAGS if getattr(args, name) is not None}
    if "data" in given:
        given["data"] = _data_key(given["data"]) if given["data"] != "digits" else "digits"
    settings = dict(RUN_DEFAULTS)
    settings["epochs"] = args.epochs if args.epochs is not None else DEFAULTS["epochs"]
    if resume_state is not None:
        config = resume_state.get("config")
        stored = config.get("run") if isinstance(config, dict) else None
        if not isinstance(stored, dict):
            raise CliError(f"--resume: the checkpoint in {args.checkpoint} does not record its run's settings")
        for key, value in RUN_ADDED.items():  # written before the setting existed: it trained without it
            stored.setdefault(key, value)
        problems = [f"{key} {_short(stored.get(key))}: {_stored_value_problem(name, stored.get(key))}"
                    for name, key in RUN_FLAGS + [("epochs", "epochs")]
                    if _stored_value_problem(name, stored.get(key)) is not None]
        if problems:
            raise CliError(f"--resume: the checkpoint in {args.checkpoint} records invalid run settings: "
                           + "; ".join(problems))
        differ = [f"{_flag(name)} {given[name]!r} (checkpoint: {_short(stored.get(key))})"
                  for name, key in RUN_FLAGS if name in given and given[name] != stored.get(key)]
        if differ:
            raise CliError("--resume with settings other than the checkpoint's: " + ", ".join(differ)
                           + "; leave them out to continue the run as it was")
        settings.update({name: stored[key] for name, key in RUN_FLAGS if key in stored})
        settings["epochs"] = args.epochs if args.epochs is not None else stored["epochs"]
        epoch = resume_state.get("epoch")
        if not _is_int(epoch) or not 0 <= epoch <= MAX_EPOCHS:
            raise CliError(f"--resume: the checkpoint in {args.checkpoint} records epoch {_short(epoch)}, not a count "
                           f"of 0..{MAX_EPOCHS} epochs (edited by hand?)")
        if args.epochs is not None and args.epochs < epoch:
            raise CliError(f"--epochs {args.epochs}: the checkpoint in {args.checkpoint} is already at epoch {epoch}; "
                           f"--epochs is the total number of epochs, not the number to add: give more than {epoch} "
                           f"to train on")
        settings["epochs"] = max(settings["epochs"], epoch)  # a run extended by an earlier --resume --epochs
    settings.update(given)
    if settings["data"] != "digits" and not os.path.exists(settings["data"]):
        raise CliError(f"--data {settings['data']}: no such file or folder (or use 'digits')")
    return settings


def _build(settings, input_shape, num_classes, resuming=False):
    from tinynet.layers.base import ShapeError

    try:
        return build_model(settings["variant"], input_shape, num_classes, aux=not settings["no_aux"])
    except ShapeError as error:
        h, w, c = input_shape
        advice = ("the checkpoint's settings are invalid (edited by hand?); start a new run" if resuming
                  else "use --image-size or another --variant")
        raise CliError(f"images of {h}x{w}x{c} do not fit the '{settings['variant']}' GoogLeNet ({error}); "
                       f"{advice}") from None


def _part_names(source):
    """How the checks of the data name its training and test sets: with the files (or .npz arrays) each was read
    from where the source keeps them apart (MNIST's IDX files, CIFAR-10's batches, an .npz with x_test), so that
    a bad label is traced to the file that holds it; else ``('train', 'test')``."""
    import zipfile

    from tinynet import data

    parts = ("train", "test")
    try:
        if os.path.isfile(source):
            with zipfile.ZipFile(source) as archive:
                members = {os.path.splitext(name)[0] for name in archive.namelist()}
            if "x_test" in members:
                return ("train (x_train, y_train)", "test (x_test, y_test)")
        elif os.path.isdir(source):
            names = os.listdir(source)
            stem = data.MNIST_FILES["train"][0]
            if any(n in (stem, stem + ".gz") or n.replace(".", "-") == stem for n in names):
                return tuple(f"{part} ({', '.join(data.MNIST_FILES[part])})" for part in parts)
            if "test_batch" in names:
                return ("train (data_batch_1..5)", "test (test_batch)")
    except (OSError, zipfile.BadZipFile, ValueError):
        pass
    return parts


def _load_training_data(source, image_size):
    """``(train, test)`` of ``source``, checked: what cannot train, and images or classes that a checkpoint
    could not describe (:func:`_image_shape_problem`, :data:`tinynet.data.MAX_CLASSES`: the commands that read
    the checkpoint would refuse the finished run), raise :class:`CliError` before any model is built."""
    from tinynet import data, fileio

    try:
        train, test = load_data(source, image_size)
        warnings = data.check_for_training(train, test, parts=_part_names(source) if source != "digits"
                                           else ("train", "test"))
    except (OSError, ValueError, KeyError, fileio.FileFormatError) as error:
        if source == "digits" and image_size is not None and str(error).startswith("digits: "):
            raise CliError(f"--image-size {image_size}: {str(error)[len('digits: '):]}") from None
        raise CliError(f"--data {source}: {error}") from None
    shape = list(train.image_shape)
    problem = _image_shape_problem(shape)
    if problem is not None:
        raise CliError(f"--data {source}: images of {'x'.join(map(str, shape))}: {problem}"
                       + (" (give --image-size)" if shape[2] <= MAX_CHANNELS else ""))
    if train.num_classes > data.MAX_CLASSES:
        raise CliError(f"--data {source}: {train.num_classes} classes; a model is built for at most "
                       f"{data.MAX_CLASSES}")
    for warning in warnings:
        print(f"warning: {escape(warning)}")
    return train, test


def _prepare(args, comm):
    """Everything before the first step, each of it checked: the run's settings, the data, the model, the
    trainer (restored on ``--resume``). Raises :class:`CliError` for a user's mistake.

    Returns ``(trainer, train, val, test, settings, config)``.
    """
    import tinynet
    from tinynet import checkpoint, data
    from tinynet.training import Trainer

    from .blocks import STAGES

    if args.device == "gpu":  # before any data is loaded or any weight made: say at once why it can't run
        try:
            tinynet.backend.require_gpu()
        except RuntimeError as error:
            raise CliError(f"--device gpu: {error}") from None
    if comm is not None and args.grad_norms is not None:
        raise CliError("--grad-norms runs in one process (it measures two backward passes of each batch); leave "
                       "out --distributed")
    for option, path in (("--plot", args.plot), ("--grad-norms", args.grad_norms)):
        if path is not None:
            check_output_file(option, path, extensions=(".png", ".svg", ".pdf"))
    if args.plot is not None and args.grad_norms is not None \
            and os.path.realpath(args.plot) == os.path.realpath(args.grad_norms):
        raise CliError(f"--plot and --grad-norms name the same file ({args.plot}): the second figure would replace "
                       f"the first; give each its own")
    resume_state = _checkpoint_plan(args, lock=comm is None or comm.rank == 0)
    settings = _settings(args, resume_state)
    if args.grad_norms is not None and (settings["no_aux"] or settings["aux_weight"] == 0):
        cause = "--no-aux" if settings["no_aux"] else "--aux-weight 0"
        if resume_state is not None:
            cause += " (the checkpoint's)"
        raise CliError(f"--grad-norms compares each block's gradient with and without the aux heads' loss, and with "
                       f"{cause} there is none: every ratio would be 1; leave out --grad-norms, or train with the "
                       f"aux heads")
    if resume_state is not None:  # every field of the manifest, before the data is loaded
        _check_config(args.checkpoint, resume_state["config"], training=True)
        _check_resume_state(args.checkpoint, resume_state, settings)
    _set_kernels(args.kernels)
    image_size = settings["image_size"] or (32 if settings["data"] == "digits" else None)
    train, test = _load_training_data(settings["data"], image_size)
    fingerprint = _data_fingerprint(train, test)
    val = None
    if settings["validation_split"] > 0:  # held out of the training images; the test split waits for the end
        train, val = data.split(train, settings["validation_split"], seed=settings["seed"])
        if len(val) == 0:
            val = None
    try:  # a crop as large as the images is refused by the trainer at its first step: say it now, in one line
        data.Augment(settings["crop"], settings["flip"]).check_batch_shape((1, *train.image_shape))
    except ValueError:
        h, w, _ = train.image_shape
        raise CliError(f"--crop {settings['crop']}: too large for images of {h}x{w} (a crop could hold padding "
                       f"only); it must be less than {min(h, w)}") from None
    if resume_state is not None:  # the stored description wins over the command line
        config = resume_state["config"]
        if config["data_fingerprint"] != fingerprint:
            raise CliError(f"--resume: the data in {settings['data']} is not the data the checkpoint was trained on "
                           f"(its images, labels or class names changed)")
        found = {"input_shape": list(train.image_shape), "num_classes": train.num_classes,
                 "class_names": list(train.class_names)}
        differ = [f"{key} {_short(config[key], 80)} (the data's: {_short(value, 80)})" for key, value in found.items()
                  if config[key] != value]
        if not differ:  # the normalizer follows from the training images: recomputed, it must agree
            fitted = data.Normalizer.fit(train.x).get_config()
            stored = config["normalizer"]
            if not all(np.allclose(np.asarray(stored[k], np.float64), np.asarray(fitted[k], np.float64),
                                   rtol=1e-5, atol=0) for k in ("mean", "std")):
                differ.append(f"normalizer {_short(stored, 80)} (the data's: {_short(fitted, 80)})")
        if differ:
            raise CliError(f"--checkpoint {args.checkpoint}: its model description does not fit the data it was "
                           f"trained on: {'; '.join(differ)}; edited by hand?")
        _check_resume_steps(args.checkpoint, resume_state, -(-len(train) // settings["batch_size"]))
    else:
        config = {"variant": settings["variant"], "input_shape": list(train.image_shape),
                  "num_classes": train.num_classes, "class_names": train.class_names,
                  "aux": not settings["no_aux"], "data": settings["data"], "image_size": image_size,
                  "normalizer": data.Normalizer.fit(train.x).get_config(),
                  "optimizer": settings["optimizer"], "lr": settings["lr"], "schedule": settings["schedule"],
                  "augment": {"crop": settings["crop"], "flip": settings["flip"]},
                  "data_fingerprint": fingerprint,
                  "run": {key: settings[name] for name, key in RUN_FLAGS} | {"epochs": settings["epochs"]}}
    held_out = f"{len(val)} validation, " if val is not None else ""
    print(f"data: {escape(settings['data'])}: {len(train)} training, {held_out}{len(test)} test images of "
          f"{'x'.join(map(str, train.image_shape))}, {train.num_classes} classes")

    tinynet.set_seed(settings["seed"])
    model = _build(settings, config["input_shape"], config["num_classes"], resuming=resume_state is not None)
    print(f"model: GoogLeNet '{config['variant']}', {model.count_params():,} parameters, "
          f"{model.count_macs() / 1e6:.1f} M multiply-adds per image, {len(model.outputs)} outputs")
    if args.device == "cpu":
        _check_memory(model, settings, train, test, 1 if comm is None else comm.size)
    if comm is not None and comm.size > 1:  # batch statistics of the global batch: N ranks train as one process
        for layer in model.layers:
            if hasattr(layer, "synchronized"):
                layer.synchronized = True
    optimizer = make_optimizer(settings["optimizer"], settings["lr"], weight_decay=settings["weight_decay"])
    trainer = Trainer(model, optimizer,
                      schedule=make_schedule(settings["schedule"], settings["lr"], settings["epochs"]),
                      aux_weight=settings["aux_weight"], label_smoothing=settings["label_smoothing"],
                      batch_size=settings["batch_size"],
                      preprocess=data.Normalizer(**config["normalizer"]), augment=data.Augment(**config["augment"]),
                      seed=settings["seed"], verbose=not args.quiet,
                      grad_norm_groups=list(STAGES) if args.grad_norms else None, communicator=comm)
    if resume_state is not None:
        if resume_state["loss_weights"] != trainer.loss_weights:
            raise CliError(f"--resume: the checkpoint in {args.checkpoint} records the loss weights "
                           f"{_short(resume_state['loss_weights'], 80)} where its run's settings give "
                           f"{trainer.loss_weights}; edited by hand?")
        recorded = resume_state.get("label_smoothing", 0.0)  # none recorded: trained without
        if recorded != trainer.label_smoothing:
            raise CliError(f"--resume: the checkpoint in {args.checkpoint} records the label smoothing "
                           f"{_short(recorded)} where its run's settings give "
                           f"{trainer.label_smoothing:g}; edited by hand?")
        try:
            checkpoint.load(args.checkpoint, trainer)
        except checkpoint.CheckpointError as error:
            raise CliError(f"--resume: {error}") from None
        print(f"resumed from {escape(args.checkpoint)} after epoch {trainer.epoch}")
        stored_epochs = config["run"]["epochs"]
        if args.epochs is not None and args.epochs != stored_epochs:
            print(f"note: --epochs {args.epochs} (the first run asked for {stored_epochs})")
        if trainer.epoch >= settings["epochs"]:
            print(f"note: nothing left to train: the run is at epoch {trainer.epoch} of {settings['epochs']}; pass "
                  f"a larger --epochs to train on")
        horizon = resume_state["schedule"].get("epochs")
        if horizon is not None and horizon != settings["epochs"]:
            print(f"note: the cosine schedule keeps the first run's horizon of {horizon:g} epochs")
    return trainer, train, val, test, settings, config


def _physical_memory():
    """This machine's memory in bytes (twice :func:`tinynet.fileio.memory_bound` where it cannot be told)."""
    from tinynet import fileio

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 * fileio.memory_bound()


def _check_memory(model, settings, train, test, ranks=1):
    """Raise :class:`CliError` when training certainly cannot fit in this machine's memory, before the first step.

    A lower bound of what a step holds: the images (training and test sets, float32), the weights with their
    gradients and two optimizer slots, and for one batch (this rank's share) every layer's output and its
    gradient. The layers' own caches (im2col buffers, masks) come on top, so a run this lets through may still
    run out of memory: :func:`inception.cli_common.run_command` then ends it in one line.
    """
    import math

    itemsize = np.dtype(model.layers[-1].dtype).itemsize if model.layers else 4
    batch = -(-settings["batch_size"] // ranks)
    activations = sum(math.prod(node.output.example_shape) for node in model.nodes) * itemsize * 2 * batch
    images = train.x.nbytes + test.x.nbytes
    weights = model.count_params() * itemsize * 4
    need, have = activations + images + weights, _physical_memory()
    if need > have:
        gib = 1 << 30
        h, w, _ = train.image_shape
        raise CliError(f"images of {h}x{w} with --batch-size {settings['batch_size']}: training needs at least "
                       f"{need / gib:.1f} GiB ({activations / gib:.1f} GiB for one batch's layer outputs and their "
                       f"gradients, {images / gib:.1f} GiB of images, {weights / gib:.1f} GiB of weights and "
                       f"optimizer state), more than this machine's {have / gib:.1f} GiB; use a smaller "
                       f"--image-size or --batch-size")


def _same_run(comm, trainer, config):
    """Refuse, on every rank alike, ranks that were given different runs (other flags, other data, a checkpoint
    that only some of them resumed): N ranks must train as one process would, and only rank 0's settings would
    be saved. One all-gather of each rank's description, before the first step."""
    mine = {"settings": config["run"], "data": config["data_fingerprint"], "first epoch": trainer.epoch + 1}
    runs = comm.allgather_object(mine)
    ranks = [rank for rank, run in enumerate(runs) if run != runs[0]]
    if not ranks:
        return
    flags = sorted({name for run in runs for name, value in run["settings"].items()
                    if runs[0]["settings"].get(name) != value})
    parts = ([f"settings {', '.join(flags)}"] if flags else []) + [key for key in ("data", "first epoch")
                                                                    if any(run[key] != runs[0][key] for run in runs)]
    error = CliError(f"--distributed: the ranks were given different runs (rank {', '.join(map(str, ranks))} "
                     f"differ{'s' if len(ranks) == 1 else ''} from rank 0 in {'; '.join(parts)}); start every rank "
                     f"with the same command line, data and checkpoint")
    error.all_ranks = True
    raise error


def train_command(args):
    """Train, evaluate on the test split, print ``test accuracy: ...`` last.

    With ``--distributed`` (under ``mpiexec``) every rank prepares the same run; the ranks agree that none of them
    met a user's mistake before any training starts; then the trainer trains data-parallel.

    With ``--checkpoint DIR`` the run holds DIR's lock from before the data is loaded until it ends
    (:func:`_lock_checkpoint`): a second run on DIR meanwhile is refused in one line.
    """
    try:
        return _train(args)
    finally:
        _release_checkpoint(args)


def _train(args):
    from tinynet.grad_norms import grad_norm_table
    from tinynet.plots import plot_grad_norms, plot_history

    start = time.perf_counter()
    comm = getattr(args, "communicator", None)
    if comm is None:
        trainer, train, val, test, settings, config = _prepare(args, None)
    else:
        prepared, problem = None, None
        try:
            prepared = _prepare(args, comm)
        except CliError as error:
            problem = str(error)
        agree(comm, problem)
        trainer, train, val, test, settings, config = prepared
        _same_run(comm, trainer, config)
        shares = sorted({-(-settings['batch_size'] // comm.size), settings['batch_size'] // comm.size},
                        reverse=True)  # "1 or 0 per rank": a rank may get no example in a step
        grad_mb = trainer.model.count_trainable_params() * np.dtype(trainer.model.layers[-1].dtype).itemsize / 1e6
        synced = any(getattr(layer, "synchronized", False) for layer in trainer.model.layers)
        if comm.size == 1:
            print("distributed: 1 rank (started without mpiexec -n N?): one process, nothing to all-reduce")
        else:
            print(f"distributed: {comm.size} ranks, global batch {settings['batch_size']} ("
                  f"{' or '.join(map(str, shares))} per rank), one all-reduce of {grad_mb:.2f} MB of gradients per "
                  f"step{', BatchNormalization synchronized' if synced else ''}; rank 0 prints and writes the files")
    if args.device != "cpu":
        if comm is not None:
            _use_local_gpu(comm)
        trainer.model.to(args.device)

    trainer.fit(train, val, epochs=settings["epochs"], checkpoint_dir=args.checkpoint, checkpoint_config=config)

    chief = comm is None or comm.rank == 0
    if args.plot and trainer.history and chief:
        title = f"GoogLeNet {config['variant']} on {os.path.basename(str(settings['data']))}"
        print(f"curves: {escape(plot_history(trainer.history, args.plot, title=title))}")
    if args.grad_norms:
        print("gradient norm per block (mean over recorded steps), with the aux heads vs the main loss alone:")
        print(grad_norm_table(trainer.grad_norms))
        print(f"gradient norms: {escape(plot_grad_norms(trainer.grad_norms, args.grad_norms))}")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a non-finite loss is checked below
        result = trainer.evaluate(test)
    if not np.isfinite(result["loss"]):  # finite weights so large that the outputs overflow: never a result
        raise CommandFailed(f"the trained model's test loss is {result['loss']}: its weights give NaN or infinite "
                            f"outputs (the run diverged in its last epoch; try a smaller --lr)")
    steps = trainer.grad_buffer.steps if trainer.grad_buffer is not None else 0
    if comm is not None and steps:
        print(f"all-reduce of the gradients: {steps} steps, {comm.stats.bytes / steps / 1e6:.2f} MB and "
              f"{1e3 * comm.stats.seconds / steps:.1f} ms per step on rank 0 (waiting for the other ranks included)")
    smoothing = f" (label smoothing {settings['label_smoothing']:g})" if settings["label_smoothing"] else ""
    print(f"test loss: {result['loss']:.4f}{smoothing}"
          + (f"  test top-5: {result['top5']:.4f}" if "top5" in result else ""))
    print(f"time taken: {time.perf_counter() - start:.1f} s")
    print(f"test accuracy: {result['top1']:.4f}")
    return 0


def _use_local_gpu(comm):
    """With several GPUs on a machine, rank r uses GPU ``local rank % count`` (not run yet: no GPU here)."""
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(comm.local_rank % count).use()


# ------------------------------------------------------------------------------------------ evaluate / predict
def _check_config(directory, config, training=False):
    """Raise :class:`CliError` unless a checkpoint's ``config`` describes a model this command can rebuild.

    The manifest's checksums prove the files belong together, not that their description is sane: a hand-edited
    or foreign ``checkpoint.json`` gets one clear line instead of a failure deep in the model code. Every field
    the command uses is checked: present, of its type, within the bounds ``train`` itself keeps (the same rule
    for the images, :func:`_image_shape_problem`), the objects built from it (the normalizer, the augmentation)
    built here, so that their own errors become this line. With ``training`` (``train --resume``) the fields
    only training uses too, and that they agree with the run settings ``config['run']`` records (checked by
    :func:`_settings` before).
    """
    from tinynet import data

    def bad(what):
        return CliError(f"--checkpoint {directory}: its model description is invalid ({what})")

    if not isinstance(config, dict) or not config:
        raise bad("no config: it was not written by 'inception train'")
    variant = config.get("variant")
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise bad(f"variant {_short(variant)} is not one of {', '.join(VARIANTS)}")
    shape = config.get("input_shape")
    problem = _image_shape_problem(shape)
    if problem is not None:
        raise bad(f"input_shape {_short(shape)}: {problem}")
    classes, names = config.get("num_classes"), config.get("class_names")
    if not _is_int(classes) or not 2 <= classes <= data.MAX_CLASSES:
        raise bad(f"num_classes {_short(classes)} is not 2..{data.MAX_CLASSES}")
    if (not isinstance(names, list) or len(names) != classes or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != classes):
        raise bad(f"class_names must be {classes} distinct, non-empty strings")
    if not isinstance(config.get("aux"), bool):
        raise bad(f"aux {_short(config.get('aux'))} is not true or false")
    if not isinstance(config.get("data"), str) or not config["data"]:
        raise bad(f"data {_short(config.get('data'))} is not a path or 'digits'")
    size = config.get("image_size")
    if size is not None and (not _is_int(size) or list(shape[:2]) != [size, size]):
        raise bad(f"image_size {_short(size)} is neither null nor the height and width of input_shape {shape}")
    normalizer, channels = config.get("normalizer"), shape[2]
    if not isinstance(normalizer, dict) or set(normalizer) != {"mean", "std"}:
        raise bad("normalizer must hold exactly the lists 'mean' and 'std'")
    values = [normalizer["mean"], normalizer["std"]]
    if not all(isinstance(v, list) and len(v) == channels
               and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) for v in values):
        raise bad(f"normalizer needs {channels} means and {channels} standard deviations (one per channel)")
    try:
        with np.errstate(over="ignore"):
            data.Normalizer(**normalizer)
    except (TypeError, ValueError) as error:
        raise bad(f"normalizer needs {channels} finite means and positive standard deviations ({error})") from None
    if not training:
        return

    def bad_run(what):
        return CliError(f"--resume: the checkpoint in {directory} records an invalid run ({what}); edited by hand?")

    augment = config.get("augment")
    if not isinstance(augment, dict) or set(augment) != {"crop", "flip"}:
        raise bad_run(f"augment {_short(augment, 80)} is not an object holding exactly 'crop' and 'flip'")
    try:
        data.Augment(**augment)
    except (TypeError, ValueError) as error:
        raise bad_run(f"augment: {error}") from None
    for key in ("optimizer", "lr", "schedule"):
        problem = _stored_value_problem(key, config.get(key))
        if problem is not None:
            raise bad_run(f"{key} {_short(config.get(key))}: {problem}")
    fingerprint = config.get("data_fingerprint")
    if not isinstance(fingerprint, str) or len(fingerprint) != 64 or set(fingerprint) - set("0123456789abcdef"):
        raise bad_run(f"data_fingerprint {_short(fingerprint)} is not a SHA-256 in hex")
    run = config["run"]  # its values were checked by _settings
    expected = {"variant": run["variant"], "aux": not run["no_aux"], "data": run["data"],
                "image_size": run["image_size"] or (32 if run["data"] == "digits" else None),
                "optimizer": run["optimizer"], "lr": run["lr"], "schedule": run["schedule"],
                "augment": {"crop": run["crop"], "flip": run["flip"]}}
    differ = [f"{key} {_short(config.get(key), 80)} where its run settings give {_short(value, 80)}"
              for key, value in expected.items() if config.get(key) != value]
    if differ:
        raise bad_run("its description and its run settings disagree: " + "; ".join(differ))


def _check_resume_state(directory, state, settings):
    """Raise :class:`CliError` unless the training state a checkpoint records (the fields besides ``config``,
    whose types :mod:`tinynet.checkpoint` checked) is the state of the run its settings describe: the schedule,
    optimizer and batch size those settings make, counters within their bounds (epoch, the optimizer's step
    count, history and gradient-norm records no longer than the epochs and steps done). A hand-edited manifest
    would otherwise train on with other settings than it reports, or print a step count of 400 digits."""

    def bad(what):
        return CliError(f"--resume: the checkpoint in {directory} records {what}; edited by hand?")

    epoch = state["epoch"]  # bounded by _settings
    schedule = state.get("schedule")
    expected = make_schedule(settings["schedule"], settings["lr"], settings["epochs"]).get_config()
    if not isinstance(schedule, dict) or set(schedule) != set(expected):
        raise bad(f"the schedule {_short(schedule, 120)}, not a '{settings['schedule']}' schedule (its run's)")
    for key, value in expected.items():
        stored = schedule[key]
        if key == "epochs" and settings["schedule"] == "cosine":  # the first run's horizon: kept on resume
            if not isinstance(stored, (int, float)) or isinstance(stored, bool) or not 1 <= stored <= MAX_EPOCHS:
                raise bad(f"a cosine schedule over {_short(stored)} epochs (not 1..{MAX_EPOCHS})")
        elif stored != value:
            raise bad(f"schedule.{key} {_short(stored)} where its run's settings give {_short(value)}")
    optimizer = state.get("optimizer") or {}
    expected = make_optimizer(settings["optimizer"], settings["lr"], weight_decay=settings["weight_decay"]).get_config()
    config = optimizer.get("config") or {}
    lr_key = "learning_rate" if "learning_rate" in config else "lr"
    lr = config.get(lr_key)
    if set(config) - {lr_key} != set(expected) - {"learning_rate"}:
        raise bad(f"an optimizer {_short(config, 120)}, not the '{settings['optimizer']}' optimizer of its run")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0 <= lr <= float(np.finfo(np.float32).max):
        raise bad(f"an optimizer learning rate of {_short(lr)}")
    for key, value in expected.items():
        if key != "learning_rate" and config[key] != value:
            raise bad(f"optimizer.config.{key} {_short(config[key])} where its run's settings give {_short(value)}")
    if state.get("batch_size") != settings["batch_size"]:
        raise bad(f"batch_size {_short(state.get('batch_size'))} where its run's settings give "
                  f"{settings['batch_size']}")
    long = [key for key, values in (state.get("history") or {}).items() if len(values) > epoch]
    if long:
        raise bad(f"a history with more entries than its {epoch} epochs ({', '.join(map(_short, long[:3]))})")
    horizon = schedule.get("epochs")
    if settings["schedule"] == "cosine" and settings["epochs"] > horizon:
        # the schedule is the first run's (a bit-exact continuation): past its horizon the learning rate is 0
        added = (f"epoch {horizon + 1:g}" if settings["epochs"] <= horizon + 1
                 else f"epochs {horizon + 1:g} to {settings['epochs']}")
        raise CliError(f"--epochs {settings['epochs']}: this run's cosine schedule reaches a learning rate of 0 at "
                       f"epoch {horizon:g} (the first run's --epochs), so {added} would train at a learning rate "
                       f"of 0 and not change the weights; to train longer, start a new run with "
                       f"--epochs {settings['epochs']} (another --checkpoint, or --overwrite), or train with "
                       f"--schedule step or constant a run you mean to extend")


def _check_resume_steps(directory, state, steps_per_epoch):
    """Raise :class:`CliError` unless the step counters of a checkpoint (the optimizer's ``iterations``, the
    gradient-norm records' steps) are at most the steps its epochs took: ``epoch`` × ``steps_per_epoch``."""
    most = state["epoch"] * steps_per_epoch
    iterations = state["optimizer"]["iterations"]
    if iterations > most:
        raise CliError(f"--resume: the checkpoint in {directory} records {_short(iterations)} optimizer steps, more "
                       f"than its {state['epoch']} epoch(s) of {steps_per_epoch} steps take; edited by hand?")
    steps = (state.get("grad_norms") or {}).get("step") or []
    if steps and max(steps) > iterations:
        raise CliError(f"--resume: the checkpoint in {directory} records gradient norms at step {_short(max(steps))}"
                       f", after its {iterations} optimizer steps; edited by hand?")


def _restore(directory, kernels=None, check=None):
    """Rebuild the model described in a checkpoint and load its weights; return (model, config).

    ``check(config)``, when given, runs once the description is known to be valid and before the model is built
    (a command's own refusal of a valid checkpoint, e.g. predict's of images it cannot read)."""
    from tinynet import checkpoint
    from tinynet.layers.base import ShapeError

    status = checkpoint.status(directory)
    if status != "checkpoint":
        reason = {"absent": "no such folder", "empty": "the folder is empty", "not a folder": "is a file"}.get(status)
        orphans = checkpoint.orphaned_data(directory) if status == "empty" else []
        if orphans:
            reason = (f"no {checkpoint.STATE_FILE}, only data files ({', '.join(orphans)}): a first save that was "
                      f"interrupted, or a manifest that was removed")
        if reason is None:
            try:
                checkpoint.verify(directory)
                reason = "no readable checkpoint"
            except checkpoint.CheckpointError as error:
                reason = str(error)
        raise CliError(f"--checkpoint {directory}: {reason}")
    _set_kernels(kernels)
    try:
        config = checkpoint.read_state(directory)["config"]
        _check_config(directory, config)
        if check is not None:
            check(config)
        model = build_model(config["variant"], config["input_shape"], config["num_classes"], config["aux"])
        checkpoint.load_weights(directory, model)
    except checkpoint.CheckpointError as error:
        raise CliError(f"--checkpoint {directory}: {error}") from None
    except ShapeError as error:  # a hand-edited description: a variant whose windows do not fit the input
        raise CliError(f"--checkpoint {directory}: its model description is invalid (the '{config['variant']}' "
                       f"GoogLeNet cannot take {tuple(config['input_shape'])} images: {error})") from None
    return model, config


def _main_probs(model, config, x, directory, batch_size=128):
    """The main head's class probabilities for the images ``x``; :class:`CommandFailed` where the checkpoint's
    weights give NaN or infinite ones (weights that are finite but huge, left by a diverging run, do), rather than
    printing NaN as a result."""
    from tinynet import data

    x = data.Normalizer(**config["normalizer"])(x)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite outputs are checked below
        outs = model.predict(x, batch_size=batch_size)
    probs = (outs[-1] if isinstance(outs, list) else outs).reshape(len(x), -1)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        largest = max(float(np.abs(w).max()) for w in model.get_weights() if w.size)
        raise CommandFailed(f"--checkpoint {directory}: the model's outputs are NaN or infinite for {int(bad.sum())} "
                            f"of {len(x)} images (its largest weight is {largest:.3g} in magnitude: was it saved "
                            f"by a run that diverged?)")
    return probs


def evaluate_command(args):
    """Evaluate a checkpoint on the test split of the data it was trained on (or ``--data``).

    Without ``--data`` the data is checked against the fingerprint the checkpoint records, as ``--resume`` does:
    data that changed since training is refused (its split would be another one, whose test images may have
    trained the model). ``--data`` names data to score as it is, unchecked. No lock is taken (see
    :func:`_lock_checkpoint`).
    """
    from tinynet import fileio, losses
    from tinynet.training import topk_accuracy

    model, config = _restore(args.checkpoint, args.kernels)
    source = args.data or config["data"]
    try:
        train, test = load_data(source, config.get("image_size"))
    except (OSError, ValueError, KeyError, fileio.FileFormatError) as error:
        raise CliError(f"--data {source}: {error}") from None
    fingerprint = config.get("data_fingerprint")
    if args.data is None and isinstance(fingerprint, str) and _data_fingerprint(train, test) != fingerprint:
        # the split of other data is another split: its "test" images may be ones the model trained on
        raise CliError(f"--checkpoint {args.checkpoint}: the data in {source} is not the data the checkpoint was "
                       f"trained on (its images, labels or class names changed), so its test split may hold images "
                       f"the model trained on; to score the model on it anyway, name it with --data")
    del train
    if list(test.image_shape) != list(config["input_shape"]):
        raise CliError(f"--data {source}: images of {test.image_shape} but the model takes "
                       f"{tuple(config['input_shape'])}")
    if len(test) == 0:
        raise CliError(f"--data {source}: the test split is empty")
    if test.y.min() < 0 or test.y.max() >= config["num_classes"]:
        raise CliError(f"--data {source}: the test labels {int(test.y.min())}..{int(test.y.max())} do not fit the "
                       f"model's {config['num_classes']} classes")
    if list(test.class_names) != list(config["class_names"]):  # label k would be scored as another class's
        raise CliError(f"--data {source}: its classes {_names(test.class_names)} are not the model's "
                       f"{_names(config['class_names'])}")
    probs = _main_probs(model, config, test.x, args.checkpoint, args.batch_size)
    loss, _ = losses.categorical_crossentropy(probs, test.y)
    print(f"{escape(source)}: {len(test)} test images")
    print(f"test loss: {loss:.4f}" + (f"  test top-5: {topk_accuracy(probs, test.y, 5):.4f}"
                                      if probs.shape[-1] > 5 else ""))
    print(f"test accuracy: {topk_accuracy(probs, test.y, 1):.4f}")
    return 0


def _names(names, shown=6):
    """A short text for a list of class names: the first few and how many in all."""
    names = list(names)
    return "[" + ", ".join(repr(n) for n in names[:shown]) + (f", ... ({len(names)} in all)]" if len(names) > shown
                                                               else "]")


def predict_command(args):
    """Classify image files with a checkpoint; images are read as the training data was (size, channels)."""
    from tinynet import data, fileio

    for path in args.images:  # every file is checked before the model is built
        check_input_file("IMAGE", path)

    def readable(config):
        channels = config["input_shape"][2]
        if channels not in (1, 3):
            raise CliError(f"--checkpoint {args.checkpoint}: the model takes images of {channels} channels, and "
                           f"image files are read as grey (1) or RGB (3); use 'evaluate --data' with an .npz of "
                           f"{channels}-channel images instead")

    model, config = _restore(args.checkpoint, args.kernels, check=readable)
    h, w, c = config["input_shape"]
    images = []
    for path in args.images:
        try:
            images.append(data.read_image(path, (h, w), channels=c))
        except (OSError, ValueError, fileio.FileFormatError) as error:
            raise CliError(f"{path}: not a readable image ({error})") from None
    x = np.stack(images)
    invert = args.invert
    if invert == "auto":  # digits are light strokes on a dark background; a scan of ink on paper is the reverse
        invert = "yes" if config["data"] == "digits" else "no"
    if invert == "yes":
        bright = x.mean(axis=(1, 2, 3)) > 0.5
        x = np.where(bright[:, None, None, None], 1.0 - x, x).astype(np.float32)
    probs = _main_probs(model, config, x, args.checkpoint)
    names = config["class_names"]
    for path, p in zip(args.images, probs):
        top = np.argsort(-p, kind="stable")[:args.top]
        print(f"{escape(path)}: " + ", ".join(f"{escape(names[i])} ({p[i]:.3f})" for i in top))
    return 0


# ------------------------------------------------------------------------------------------ parsers
def register(subparsers):
    """Add ``train``, ``evaluate`` and ``predict`` to ``python -m inception``."""
    p = subparsers.add_parser(
        "train", help="train a GoogLeNet (default: the small one on digits)",
        description="Train a GoogLeNet and end with the line 'test accuracy: ...'. Every training image trains "
                    "unless --validation-split holds some out for per-epoch figures; the test split is used once, "
                    "at the end. "
                    "Flags left out take their defaults, or on --resume the checkpoint's values.")
    p.add_argument("--data", type=path_text, default=None,
                   help="'digits' (built in) or a path: an .npz with x and y, a folder of MNIST IDX files, a folder "
                        "of CIFAR-10 batches, or a folder of class subfolders (default: digits)")
    p.add_argument("--variant", default=None, choices=RUN_CHOICES["variant"],
                   help="which GoogLeNet: small (32x32 inputs, quarter width), paper (224x224, Table 1) or blog "
                        "(the blog post's Keras code) (default: small)")
    p.add_argument("--epochs", type=RUN_TYPES["epochs"], default=None,
                   help=f"total number of epochs (default: {DEFAULTS['epochs']}; on --resume, the first run's; a "
                        f"larger one extends a run with a step or constant schedule, not a cosine one, whose "
                        f"learning rate ends at 0)")
    p.add_argument("--batch-size", type=RUN_TYPES["batch_size"], default=None,
                   help=f"images per training step (default: {DEFAULTS['batch_size']})")
    p.add_argument("--lr", type=RUN_TYPES["lr"], default=None,
                   help=f"initial learning rate; training stops at once if the loss diverges "
                        f"(default: {DEFAULTS['lr']})")
    p.add_argument("--optimizer", default=None, choices=RUN_CHOICES["optimizer"],
                   help="sgd: momentum 0.9, as the paper; adam: Keras' defaults (default: adam)")
    p.add_argument("--schedule", default=None, choices=RUN_CHOICES["schedule"],
                   help="learning rate over the epochs: step is the paper's x0.96 every 8 epochs, cosine decays to 0 "
                        "at the last epoch, constant keeps it (default: cosine)")
    p.add_argument("--validation-split", type=RUN_TYPES["validation_split"], default=None,
                   help="fraction of the training images held out (stratified) to validate after every epoch, "
                        "e.g. 0.1; 0 trains on them all (default: 0)")
    p.add_argument("--weight-decay", type=RUN_TYPES["weight_decay"], default=None,
                   help="decoupled weight decay per step, as a fraction of the learning rate (default: 0)")
    p.add_argument("--aux-weight", type=RUN_TYPES["aux_weight"], default=None,
                   help="loss weight of each auxiliary head (default: 0.3, the paper's)")
    p.add_argument("--label-smoothing", type=RUN_TYPES["label_smoothing"], default=None,
                   help=f"every head's targets become t(1 - s) + s/classes, as Inception v3 trains (0.1) and Keras' "
                        f"label_smoothing; 0 turns it off (default: {RUN_DEFAULTS['label_smoothing']})")
    p.add_argument("--no-aux", action="store_true", default=None, help="build the network without the aux heads")
    p.add_argument("--image-size", type=RUN_TYPES["image_size"], default=None,
                   help="resize every image to this height and width (default: 32 for digits, else as stored)")
    p.add_argument("--crop", type=RUN_TYPES["crop"], default=None,
                   help="random-crop augmentation: pad by this many pixels and crop back; 0 turns it off "
                        "(default: 2)")
    p.add_argument("--flip", action="store_true", default=None,
                   help="random horizontal flips (wrong for digits: a mirrored 2 is not a 2)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="where to train: the CPU, or a CUDA GPU through CuPy")
    p.add_argument("--kernels", default=DEFAULTS["kernels"], choices=["numpy", "numba"],
                   help="CPU kernels: numba (compiled, parallel; the default when installed) or numpy (the "
                        "reference); resume with the same kernels for a bit-exact continuation")
    p.add_argument("--checkpoint", metavar="DIR", type=path_text, help="save a checkpoint into DIR after every epoch")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint DIR")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in --checkpoint DIR even though it holds a checkpoint (replaced at the "
                        "first save)")
    p.add_argument("--plot", metavar="FILE", type=path_text,
                   help="write the training curves to FILE (.png, .svg or .pdf)")
    p.add_argument("--grad-norms", metavar="FILE", type=path_text,
                   help="record each block's gradient norm with and without the aux heads, and plot it to FILE")
    p.add_argument("--seed", type=RUN_TYPES["seed"], default=None,
                   help="seed of the weights, the shuffling, the augmentation and the validation split (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--distributed", action="store_true",
                   help="train data-parallel over the processes of 'mpiexec -n N python -m inception train "
                        "--distributed': --batch-size is the global batch, split over the ranks; one all-reduce "
                        "of the gradients per step; BatchNormalization synchronized; only rank 0 prints and writes "
                        "files; a checkpoint resumes with any number of ranks (needs pip install -e "
                        "'.[distributed]')")
    p.set_defaults(func=train_command)

    e = subparsers.add_parser("evaluate", help="evaluate a checkpoint on its test split",
                              description="Rebuild the model a checkpoint describes, load its weights and print the "
                                          "loss and accuracy on the test split of its data (or of --data).")
    e.add_argument("--checkpoint", metavar="DIR", type=path_text, required=True,
                   help="the folder 'train --checkpoint' wrote")
    e.add_argument("--data", type=path_text, default=None,
                   help="evaluate on another data set of the same image size and classes, as it is (default: the "
                        "checkpoint's, refused if it changed since training)")
    e.add_argument("--batch-size", type=positive_int(65_536), default=128, help="images per inference batch")
    e.add_argument("--kernels", default=None, choices=["numpy", "numba"],
                   help="CPU kernels (default: numba when installed)")
    e.set_defaults(func=evaluate_command)

    r = subparsers.add_parser("predict", help="classify image files with a checkpoint",
                              description="Classify image files with a checkpoint; each image is read as the "
                                          "training data was (resized, grey or colour) and its top classes printed.")
    r.add_argument("--checkpoint", metavar="DIR", type=path_text, required=True,
                   help="the folder 'train --checkpoint' wrote")
    r.add_argument("images", nargs="+", metavar="IMAGE", type=path_text, help="image files (PNG, JPEG, TIFF, ...)")
    r.add_argument("--top", type=positive_int(), default=3, help="how many of the most likely classes to show")
    r.add_argument("--invert", default="auto", choices=["auto", "yes", "no"],
                   help="invert bright images; auto inverts them for digits, which are light strokes on dark")
    r.add_argument("--kernels", default=None, choices=["numpy", "numba"],
                   help="CPU kernels (default: numba when installed)")
    r.set_defaults(func=predict_command)


def main(argv=None):
    """Run only these three commands (``python -m inception.cli_train train ...``)."""
    parser = OneLineParser(prog="inception")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
