"""Batches and what is applied to them: per-channel normalisation, augmentation (random crop, flip), iteration.
"""
from __future__ import annotations

import numpy as np


# -------------------------------------------------------------------------------------------- batches
class Normalizer:
    """Per-channel standardisation ``(x − mean) / std`` with statistics from the training images."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)

    @classmethod
    def fit(cls, x):
        x = np.asarray(x, dtype=np.float32)
        return cls(x.mean(axis=(0, 1, 2)), np.maximum(x.std(axis=(0, 1, 2)), 1e-6))

    def __call__(self, x):
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def get_config(self):
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def random_crop(x, padding, rng) -> np.ndarray:
    """Pad each image by ``padding`` (zeros) and crop back at a random offset, one offset per image.

    The crop is one fancy-index gather for the whole batch (no loop over images).
    """
    if padding <= 0:
        return x
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = rng.integers(0, 2 * padding + 1, size=n)
    dx = rng.integers(0, 2 * padding + 1, size=n)
    rows = (dy[:, None] + np.arange(h))[:, :, None]     # (n, h, 1)
    cols = (dx[:, None] + np.arange(w))[:, None, :]     # (n, 1, w)
    return padded[np.arange(n)[:, None, None], rows, cols]


def random_flip(x, rng) -> np.ndarray:
    """Mirror each image left-right with probability 1/2."""
    flip = rng.random(len(x)) < 0.5
    return np.where(flip[:, None, None, None], x[:, :, ::-1], x)


class Augment:
    """Optional training-time augmentation: random crop (pad then crop) and horizontal flip.

    Parameters
    ----------
    crop : int, default 0
        Padding for the random crop (0: no crop).
    flip : bool, default False
        Random left-right flips (wrong for digits: a mirrored 2 is not a 2).
    """

    def __init__(self, crop=0, flip=False):
        self.crop, self.flip = int(crop), bool(flip)

    def __call__(self, x, rng):
        if self.crop:
            x = random_crop(x, self.crop, rng)
        if self.flip:
            x = random_flip(x, rng)
        return x

    def get_config(self):
        return {"crop": self.crop, "flip": self.flip}


def iterate_batches(x, y, batch_size, shuffle=False, rng=None):
    """Yield ``(x_batch, y_batch)`` of ``batch_size`` (the last one may be smaller).

    With ``shuffle`` the order is a permutation drawn from ``rng`` (a NumPy Generator), one per call.
    """
    n = len(x)
    order = rng.permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def num_batches(n, batch_size) -> int:
    return -(-n // batch_size)


__all__ = ["Normalizer", "random_crop", "random_flip", "Augment", "iterate_batches", "num_batches"]
