"""What tests/test_distributed.py runs under ``mpiexec -n N``: ``python tests/distributed_worker.py COMMAND OUT``.

Each command trains small float64 models data-parallel and writes what it got into the folder OUT (rank 0
only) for the test, which computes the same runs in one process and compares:

* ``equivalence``: an LRN model through ``Model.compile/fit`` (Adam, an uneven last batch of 5 = 3 + 2), the
  tiny BatchNormalization + Dropout model with ``synchronized=True`` through the ``Trainer`` (SGD with momentum,
  a last batch of 1: rank 1 has no example in it), and the same model with BatchNormalization not synchronized
  (its ranks must still hold equal weights). Rank 1 may write no file: its ``fileio.atomic_write`` raises.
* ``resume``: continue OUT/from_one (a checkpoint written by one process) to epoch 3, and train epochs 1-2 into
  OUT/from_two (a checkpoint the test continues in one process).
* ``fail``: rank 1 raises inside ``fit``; the job must end at once, with that rank's error.
* ``disagree``: the ranks are given different data; every rank must refuse before the first step.
* ``cli_fail``: ``inception train --distributed`` where rank 1's second step raises ``OSError``.

The model builders are shared with the test (imported from here).
"""
import json
import os
import sys

import numpy as np

import tinynet
from tinynet import Model, checkpoint, data, distributed, fileio, optimizers
from tinynet.callbacks import Callback, CSVLogger, ModelCheckpoint
from tinynet.layers import (Conv2D, Dense, Flatten, GlobalAveragePooling2D, Input, LocalResponseNormalization,
                            MaxPool2D)
from tinynet.training import Trainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import tiny_model, toy_data  # noqa: E402

BATCH = 8


def lrn_model(seed=0):
    """8×8×1 → conv → LRN (α large enough to matter) → pool → aux head; → conv → GAP → main head."""
    tinynet.layers.reset_names()
    tinynet.set_seed(seed)
    x = Input((8, 8, 1))
    h = Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
    h = LocalResponseNormalization(size=3, alpha=0.5, beta=0.75, name="lrn")(h)
    h = MaxPool2D(2, name="pool")(h)
    aux = Dense(3, activation="softmax", name="aux_output")(Flatten(name="aux_flatten")(h))
    h = Conv2D(8, 3, padding="same", activation="relu", name="conv2")(h)
    main = Dense(3, activation="softmax", name="output")(GlobalAveragePooling2D(name="gap")(h))
    return Model(x, [aux, main])


def bn_model(synchronized=True, seed=0):
    """tests/helpers.tiny_model (conv, BatchNormalization, aux head, conv, pool, Dropout 0.3, main head)."""
    model = tiny_model(seed=seed)
    model.get_layer("low_bn").synchronized = synchronized
    return model


def lrn_run(distributed_arg=None, out=None):
    """The LRN model through Keras' API: 21 examples, batch 8 (8, 8, 5), Adam, validation data, 3 epochs."""
    tinynet.set_floatx("float64")
    model = lrn_model()
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  loss_weights=[0.3, 1.0], metrics=[None, ["accuracy"]])
    if distributed_arg is not None:
        distributed.distribute(model, distributed_arg)
    train, val = toy_data(n=21, seed=1), toy_data(n=7, seed=2)
    callbacks = []
    if out is not None:
        callbacks = [CSVLogger(os.path.join(out, "lrn_log.csv")),
                     ModelCheckpoint(os.path.join(out, "lrn_ckpt"), monitor="val_loss")]
    history = model.fit(train.x, train.y, batch_size=BATCH, epochs=3, validation_data=(val.x, val.y), verbose=0,
                        callbacks=callbacks)
    evaluated = model.evaluate(val.x, val.y, verbose=0, return_dict=True)
    return model, history.history, evaluated


def bn_trainer(synchronized=True, distributed_arg=False, checkpoint_dir=None):
    tinynet.set_floatx("float64")
    model = bn_model(synchronized)
    return Trainer(model, optimizers.SGD(0.05, momentum=0.9), batch_size=BATCH, seed=3, verbose=False,
                   augment=data.Augment(crop=1, flip=True), distributed=distributed_arg)


def bn_run(synchronized=True, distributed_arg=False, epochs=3):
    """The BN + Dropout model through the Trainer: 17 examples, batch 8 (8, 8, 1), crop/flip augmentation."""
    trainer = bn_trainer(synchronized, distributed_arg)
    history = trainer.fit(toy_data(n=17, seed=4), toy_data(n=5, seed=5), epochs=epochs)
    return trainer, history


def make_npz(path, n=40, size=16):
    """Images of 4 classes (a bright quadrant each) for the command line: ``x`` uint8, ``y``."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = (rng.random((n, size, size)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, size // 2 * r:size // 2 * (r + 1), size // 2 * col:size // 2 * (col + 1)] += 180
    np.savez(path, x=x, y=y)
    return str(path)


def flat_weights(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def spread_over_ranks(comm, model):
    """Max difference between any rank's weights and rank 0's (0.0: every copy equal)."""
    gathered = comm.allgather_object(flat_weights(model))
    return float(max(np.abs(w - gathered[0]).max() for w in gathered))


def _refuse_writes_on_other_ranks(comm):
    if comm.rank != 0:
        def refuse(path, *args, **kwargs):
            raise AssertionError(f"rank {comm.rank} tried to write {path}")
        fileio.atomic_write = refuse


def equivalence(out):
    comm = distributed.world()
    _refuse_writes_on_other_ranks(comm)
    results = {"size": comm.size}
    try:  # NCCL asked for on a machine without a GPU: a clear error, on every rank alike
        distributed.Communicator(nccl=True)
        results["nccl"] = "constructed"
    except distributed.DistributedError as error:
        results["nccl"] = str(error)
    model, history, evaluated = lrn_run(True, out)
    results["lrn"] = {"history": history, "evaluate": evaluated, "spread": spread_over_ranks(comm, model),
                      "allreduce_calls": comm.stats.calls}
    lrn_weights = flat_weights(model)
    trainer, history = bn_run(True, True)
    results["bn"] = {"history": history, "spread": spread_over_ranks(comm, trainer.model),
                     "evaluate": trainer.evaluate(toy_data(n=5, seed=5))}
    bn_weights = flat_weights(trainer.model)
    trainer, _ = bn_run(False, True)
    results["bn_local"] = {"spread": spread_over_ranks(comm, trainer.model)}
    if comm.rank == 0:
        np.savez(os.path.join(out, "weights.npz"), lrn=lrn_weights, bn=bn_weights,
                 bn_local=flat_weights(trainer.model))
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f)


def resume(out):
    comm = distributed.world()
    trainer = bn_trainer(True, True)
    checkpoint.load(os.path.join(out, "from_one"), trainer)
    trainer.fit(toy_data(n=17, seed=4), toy_data(n=5, seed=5), epochs=3,
                checkpoint_dir=os.path.join(out, "from_one"))
    resumed = flat_weights(trainer.model)
    trainer = bn_trainer(True, True)
    trainer.fit(toy_data(n=17, seed=4), toy_data(n=5, seed=5), epochs=2, checkpoint_dir=os.path.join(out, "from_two"))
    if comm.rank == 0:
        np.savez(os.path.join(out, "resumed.npz"), from_one=resumed, history=json.dumps(trainer.history))


class _FailOnRank(Callback):
    def __init__(self, rank):
        super().__init__()
        self.rank = rank

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1 and distributed.world().rank == self.rank:
            raise RuntimeError(f"injected failure on rank {self.rank}")


def fail(out):
    trainer = bn_trainer(True, True)
    trainer.fit(toy_data(n=17, seed=4), epochs=50, callbacks=[_FailOnRank(1)])


def disagree(out):
    """Rank 1 has one example fewer (as a rank that could not see the checkpoint would start at epoch 0)."""
    trainer = bn_trainer(True, True)
    trainer.fit(toy_data(n=17 - distributed.world().rank, seed=4), epochs=2)


def cli_fail(out):
    from inception.__main__ import main
    from tinynet import engine

    comm = distributed.world()
    if comm.rank == 1:
        original, calls = engine.Engine.train_global_batch, []

        def failing(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise OSError(28, "No space left on device (injected)")
            return original(self, *args, **kwargs)

        engine.Engine.train_global_batch = failing
    sys.exit(main(["train", "--distributed", "--data", os.path.join(out, "toy.npz"), "--image-size", "16",
                   "--epochs", "20", "--batch-size", "8", "--kernels", "numpy", "--quiet"]))


if __name__ == "__main__":
    command, folder = sys.argv[1], sys.argv[2]
    {"equivalence": equivalence, "resume": resume, "fail": fail, "disagree": disagree,
     "cli_fail": cli_fail}[command](folder)
