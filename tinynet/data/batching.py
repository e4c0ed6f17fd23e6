"""Batches and what is applied to them: per-channel normalisation, augmentation (random crop, flip), iteration.

Batches of images are ``(N, H, W, C)``; each function checks that first and names the shape it got.
"""
from __future__ import annotations

import reprlib
import warnings

import numpy as np

from ..backend import is_gpu_array
from ..checks import check_flag, check_number
from .validation import _nonfinite_count, _plural

#: :meth:`Normalizer.fit` treats a channel as constant when its standard deviation is at most this fraction
#: of the channel's scale (its largest absolute value).
CONSTANT_STD_FRACTION = 1e-3


def _check_batch(who, shape):
    """Raise ``ValueError`` unless ``shape`` is that of a batch of images (N, H, W, C)."""
    if len(shape) != 4:
        raise ValueError(f"{who}: takes a batch of images (N, H, W, C), got shape {tuple(shape)}")


def _as_batch(x):
    """``x`` as an array: a NumPy array, or a CuPy array kept on its device (an array-like such as a nested list
    becomes a NumPy array)."""
    return x if is_gpu_array(x) else np.asarray(x)


def _check_rng(who, rng):
    """Raise ``TypeError`` unless ``rng`` is a :class:`numpy.random.Generator` (a seed would repeat its draws on
    every call)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{who}: rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got "
                        f"{reprlib.repr(rng)}")


# -------------------------------------------------------------------------------------------- batches
def _per_channel(name, values) -> np.ndarray:
    """``values`` (a number or a sequence) as a finite float32 vector, or an error naming ``name``."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"Normalizer: {name} must be a number or a sequence of numbers (one per channel), got "
                        f"{reprlib.repr(values)}")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
        array = array.astype(np.float32).reshape(-1)
    if array.size == 0:
        raise ValueError(f"Normalizer: {name} is empty; give one value per channel")
    bad = ~np.isfinite(array)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"Normalizer: {name} must be finite (as float32), got {name}[{i}] = {_value_at(values, i)}")
    return array


def _value_at(values, i):
    """The ``i``-th of the values as given (for messages)."""
    return np.asarray(values).reshape(-1)[i].item()


def _channel_stats(x):
    """The mean and standard deviation of each channel of the float32 batch ``x`` (N, H, W, C), summed in float64.

    A float32 sum over the strided N, H, W axes is not pairwise: over millions of pixels its rounding error
    reaches a few percent of the standard deviation. The float64 sums are cast chunk by chunk (no float64 copy
    of ``x``); the deviations from the mean are one float32 temporary, as in :func:`numpy.std`.
    """
    count = x.shape[0] * x.shape[1] * x.shape[2]
    mean = np.sum(x, axis=(0, 1, 2), dtype=np.float64) / count
    deviation = x - mean.astype(np.float32)
    np.multiply(deviation, deviation, out=deviation)
    std = np.sqrt(np.sum(deviation, axis=(0, 1, 2), dtype=np.float64) / count)
    return mean, std


class Normalizer:
    """Per-channel standardisation with statistics from the training images.

    .. math:: y_{nhwc} = (x_{nhwc} − μ_c) / σ_c

    Parameters
    ----------
    mean : float or sequence of float
        ``μ``: one value per channel ``(C,)``, or one value for every channel. Finite.
    std : float or sequence of float
        ``σ``: as ``mean``; finite and positive. A single value and ``C`` values are broadcast to ``C``.

    Raises
    ------
    TypeError
        ``mean`` or ``std`` that are not numbers.
    ValueError
        An empty, infinite or NaN ``mean`` or ``std``, a ``std`` that is not positive (as float32), or
        ``C`` means and ``C'`` standard deviations (both named).
    """

    def __init__(self, mean, std):
        self.mean, self.std = _per_channel("mean", mean), _per_channel("std", std)
        if not (self.std > 0).all():
            i = int(np.argmax(~(self.std > 0)))
            raise ValueError(f"Normalizer: std must be positive, got std[{i}] = {_value_at(std, i)}")
        if self.mean.size != self.std.size:
            if 1 not in (self.mean.size, self.std.size):
                raise ValueError(f"Normalizer: {self.mean.size} means but {self.std.size} standard deviations; "
                                 f"give one of each per channel")
            self.mean, self.std = (np.ascontiguousarray(a) for a in np.broadcast_arrays(self.mean, self.std))

    @classmethod
    def fit(cls, x):
        """A :class:`Normalizer` with the mean and standard deviation of each channel of ``x``.

        A channel whose standard deviation is at most :data:`CONSTANT_STD_FRACTION` of its scale (its largest
        ``|value|``) is constant but for rounding: it is centred and divided by that scale (by 1 for an all-zero
        channel) instead, with a ``RuntimeWarning`` naming it, so a pixel 0.1 off the mean stays small (Keras'
        ``Normalization`` divides by ``max(σ, 1e-7)``, which makes it ``1e6``).

        Parameters
        ----------
        x : array (N, H, W, C)
            The training images.

        Raises
        ------
        ValueError
            ``x`` not (N, H, W, C), without any image or pixel, or holding NaN or infinite values (counted).
        """
        x = np.asarray(x, dtype=np.float32)
        _check_batch("Normalizer.fit", x.shape)
        if x.size == 0:
            raise ValueError(f"Normalizer.fit: no pixels to measure (images of shape {x.shape}, "
                             f"{_plural(x.shape[0], 'image')})")
        bad = _nonfinite_count(x)
        if bad:
            raise ValueError(f"Normalizer.fit: {_plural(bad, 'pixel value')} of the {x.size} "
                             f"{'is' if bad == 1 else 'are'} NaN or infinite")
        mean, std = _channel_stats(x)
        scale = np.maximum(x.max(axis=(0, 1, 2)), -x.min(axis=(0, 1, 2)))  # largest |value|, no temporary
        constant = std <= CONSTANT_STD_FRACTION * scale
        if constant.any():
            channels = np.flatnonzero(constant)
            std = np.where(constant, np.where(scale > 0, scale, 1), std)
            warnings.warn(f"Normalizer.fit: channel{'s' if channels.size > 1 else ''} "
                          f"{', '.join(str(c) for c in channels[:8])}{', ...' if channels.size > 8 else ''} "
                          f"{'are' if channels.size > 1 else 'is'} constant in the training images; divided by "
                          f"{'their' if channels.size > 1 else 'its'} largest |value| instead of the standard "
                          f"deviation", RuntimeWarning, stacklevel=2)
        return cls(mean, std)

    def __call__(self, x):
        """``(x − mean) / std`` as float32, for images ``(..., C)`` with the normalizer's ``C`` channels.

        Raises
        ------
        ValueError
            Images whose channel count differs from the normalizer's (both named); a normalizer of a single
            value applies to any channel count.
        """
        x = np.asarray(x, dtype=np.float32)
        channels = self.mean.size
        if channels != 1 and (x.ndim == 0 or x.shape[-1] != channels):
            raise ValueError(f"Normalizer: images of shape {x.shape} have {x.shape[-1] if x.ndim else 0} "
                             f"channel(s) but the normalizer holds {channels} means and standard deviations "
                             f"(one per channel)")
        return ((x - self.mean) / self.std).astype(np.float32)

    def get_config(self):
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def _check_padding(who, name, padding, shape):
    """Raise ``ValueError`` unless every crop of ``padding`` keeps part of images of batch ``shape``.

    A window of ``H`` rows at offset ``dy`` in ``0..2p`` of the padded image keeps rows ``max(dy, p)`` to
    ``min(dy + H, p + H)`` of the image: none at all when ``dy + H ≤ p``, possible once ``p ≥ H`` (and the same
    for the columns). So ``p`` must stay below both ``H`` and ``W``.
    """
    h, w = shape[1:3]
    if padding and padding >= min(h, w):
        raise ValueError(f"{who}: {name}={padding} is too large for images of {h}×{w} (batch of shape "
                         f"{tuple(shape)}): a crop could hold padding only; {name} must be less than {min(h, w)}, "
                         f"the image's smaller side")


def random_crop(x, padding, rng) -> np.ndarray:
    """Pad each image by ``padding`` (zeros) and crop back at a random offset, one offset per image.

    The crop is one fancy-index gather for the whole batch (no loop over images).

    Parameters
    ----------
    x : ndarray (N, H, W, C)
    padding : int
        ``0 ≤ padding < min(H, W)``, so that every crop keeps part of its image.
    rng : numpy.random.Generator

    Raises
    ------
    ValueError
        ``x`` not (N, H, W, C); ``padding`` not an integer ≥ 0, or too large for the images (shape named).
    TypeError
        ``rng`` not a :class:`numpy.random.Generator`.
    """
    x = _as_batch(x)
    _check_batch("random_crop", x.shape)
    padding = check_number("random_crop", "padding", padding, low=0, integer=True)
    _check_rng("random_crop", rng)
    _check_padding("random_crop", "padding", padding, x.shape)
    if padding == 0:
        return x
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = rng.integers(0, 2 * padding + 1, size=n)
    dx = rng.integers(0, 2 * padding + 1, size=n)
    rows = (dy[:, None] + np.arange(h))[:, :, None]     # (n, h, 1)
    cols = (dx[:, None] + np.arange(w))[:, None, :]     # (n, 1, w)
    return padded[np.arange(n)[:, None, None], rows, cols]


def random_flip(x, rng) -> np.ndarray:
    """Mirror each image of ``x`` (N, H, W, C) left-right with probability 1/2, one draw per image from ``rng``
    (a :class:`numpy.random.Generator`, else ``TypeError``)."""
    x = _as_batch(x)
    _check_batch("random_flip", x.shape)
    _check_rng("random_flip", rng)
    flip = rng.random(len(x)) < 0.5
    return np.where(flip[:, None, None, None], x[:, :, ::-1], x)


class Augment:
    """Optional training-time augmentation: random crop (pad then crop) and horizontal flip.

    Parameters
    ----------
    crop : int, default 0
        Padding for the random crop (0: no crop); less than the images' height and width (see
        :func:`random_crop`), checked against each batch.
    flip : bool, default False
        Random left-right flips (wrong for digits: a mirrored 2 is not a 2).

    Raises
    ------
    ValueError
        ``crop`` not an integer ≥ 0 (booleans and strings included).
    TypeError
        ``flip`` not a boolean.
    """

    def __init__(self, crop=0, flip=False):
        self.crop = check_number("Augment", "crop", crop, low=0, integer=True)
        check_flag("Augment", "flip", flip)
        self.flip = bool(flip)

    def check_batch_shape(self, shape):
        """Raise ``ValueError`` unless batches of ``shape`` (N, H, W, C) can be augmented (``crop`` fits).

        A trainer may call it before the first step; :meth:`__call__` calls it on every batch.
        """
        _check_batch("Augment", shape)
        _check_padding("Augment", "crop", self.crop, shape)

    def __call__(self, x, rng):
        """``x`` (N, H, W, C) randomly cropped and flipped, one draw per image from ``rng`` (a
        :class:`numpy.random.Generator`, else ``TypeError``)."""
        x = _as_batch(x)
        self.check_batch_shape(x.shape)
        _check_rng("Augment", rng)
        if self.crop:
            x = random_crop(x, self.crop, rng)
        if self.flip:
            x = random_flip(x, rng)
        return x

    def get_config(self):
        return {"crop": self.crop, "flip": self.flip}


def iterate_batches(x, y, batch_size, shuffle=False, rng=None):
    """Yield ``(x_batch, y_batch)`` of ``batch_size`` (the last one may be smaller; a ``batch_size`` larger than
    the data gives a single batch).

    Parameters
    ----------
    x, y : array_like
        Images and labels, as many of each (their first axes).
    batch_size : int
        At least 1.
    shuffle : bool, default False
        Draw the order as a permutation from ``rng``, one per call (so the same generator state gives the same
        order, and each epoch's call a new one).
    rng : numpy.random.Generator, optional
        Needed with ``shuffle``.

    Raises
    ------
    ValueError
        ``batch_size`` not an integer ≥ 1; ``x`` and ``y`` of different lengths (shapes named). Raised on the
        first ``next()``, before any batch.
    TypeError
        ``shuffle`` not a boolean, or ``shuffle`` without a :class:`numpy.random.Generator` as ``rng``.
    """
    batch_size = check_number("iterate_batches", "batch_size", batch_size, low=1, integer=True)
    shuffle = check_flag("iterate_batches", "shuffle", shuffle)
    x, y = _as_batch(x), _as_batch(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"iterate_batches: {len(x) if x.ndim else 0} images (shape {x.shape}) but "
                         f"{len(y) if y.ndim else 0} labels (shape {y.shape}); give one label per image")
    if shuffle:
        _check_rng("iterate_batches", rng)
    n = len(x)
    order = rng.permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def num_batches(n, batch_size) -> int:
    """The number of batches of ``batch_size`` (the last one partial) in ``n`` examples: ``ceil(n / batch_size)``.

    Raises
    ------
    ValueError
        ``n`` not an integer ≥ 0, or ``batch_size`` not an integer ≥ 1.
    """
    n = check_number("num_batches", "n", n, low=0, integer=True)
    batch_size = check_number("num_batches", "batch_size", batch_size, low=1, integer=True)
    return -(-n // batch_size)


__all__ = ["CONSTANT_STD_FRACTION", "Normalizer", "random_crop", "random_flip", "Augment", "iterate_batches",
           "num_batches"]
