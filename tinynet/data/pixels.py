"""Pixel scaling to float32 in [0, 1] (:func:`scale_pixels`, the rule every loader uses) and batch resizing.

Scaling follows the range a type or the values really have, never clipping (see :mod:`tinynet.data`).
:func:`resize_images` is bilinear with half-pixel centres, done for a whole batch as two small matrix
products: ``Y = R_h X R_wᵀ``.
"""
from __future__ import annotations

import numpy as np

from ..fileio import FileFormatError


# -------------------------------------------------------------------------------------------- pixel scaling
def _value_range(x, source):
    """``(min, max)`` of ``x`` as floats; NaN or infinite values raise :class:`FileFormatError`."""
    if x.size == 0:
        return 0.0, 0.0
    lo, hi = x.min(), x.max()
    if x.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise FileFormatError(f"{source}: {bad} pixel value(s) are NaN or infinite")
    return float(lo), float(hi)


def _type_divisor(dtype):
    """The divisor fixed by the dtype alone (bool, uint8, uint16), or None when the values decide."""
    if dtype.kind == "b":
        return 1.0
    if dtype.kind == "u" and dtype.itemsize in (1, 2):
        return 255.0 if dtype.itemsize == 1 else 65535.0
    return None


def _value_divisor(lo, hi, dtype, source):
    """The divisor for floats and wide integers from their range: 1 within [0, 1], 255 within [0, 255]."""
    if lo < 0:
        raise FileFormatError(f"{source}: pixel values lie in [{lo:g}, {hi:g}] ({dtype}); negative values are not "
                              f"pixels: give [0, 1] floats, [0, 255] 8-bit or [0, 65535] uint16 values")
    if hi <= 1:
        return 1.0
    if hi <= 255:
        return 255.0
    raise FileFormatError(f"{source}: pixel values lie in [{lo:g}, {hi:g}] ({dtype}); expected [0, 1], or "
                          f"[0, 255] for 8-bit values (16-bit values: store them as uint16)")


def _scale_arrays(arrays, source) -> list:
    """Scale several arrays (e.g. train and test images) by one rule, decided from all of them."""
    arrays = [np.asarray(a) for a in arrays]
    for a in arrays:
        if a.dtype.kind not in "biuf":
            raise FileFormatError(f"{source}: pixels of dtype {a.dtype} are not numbers an image holds "
                                  f"(expected uint8, uint16, bool or float)")
    ranges = [_value_range(a, source) for a in arrays if _type_divisor(a.dtype) is None and a.size]
    shared = None
    if ranges:
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        dtypes = sorted({str(a.dtype) for a in arrays if _type_divisor(a.dtype) is None})
        shared = _value_divisor(lo, hi, "/".join(dtypes), source)
    out = []
    for a in arrays:
        divisor = _type_divisor(a.dtype) or shared or 1.0
        x = a.astype(np.float32)
        if divisor != 1.0:
            x /= np.float32(divisor)
        out.append(x)
    return out


def scale_pixels(x, source="images") -> np.ndarray:
    """Pixel values as float32 in [0, 1], scaled from the range they really have (the rule every loader uses).

    Parameters
    ----------
    x : array_like
        Images of any shape.
    source : str
        Names the file (or array) in error messages.

    Returns
    -------
    float32 ndarray, same shape
        ``bool`` → 0/1; ``uint8`` ÷ 255; ``uint16`` ÷ 65535; floats and other integer types kept when within
        [0, 1], ÷ 255 when within [0, 255] with a maximum above 1.

    Raises
    ------
    tinynet.fileio.FileFormatError
        NaN or infinite values (with their count), negative values, values above 255 in a float or wide integer
        type, or a dtype that is not a number; the message starts with ``source`` and gives the range found.
    """
    return _scale_arrays([x], source)[0]


# -------------------------------------------------------------------------------------------- resizing
def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of bilinear weights, half-pixel centres, edges clamped."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    centres = np.clip(centres, 0, n_in - 1)
    lo = np.floor(centres).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def _size_pair(size, who="image_size"):
    """``(h, w)`` from a positive int or a pair of them, else ``ValueError`` naming ``who`` and ``size``."""
    pair = (size, size) if np.isscalar(size) else tuple(size) if np.ndim(size) == 1 else ()
    if len(pair) != 2:
        raise ValueError(f"{who} must be a positive int or a pair (h, w) of them, got {size!r}")
    h, w = pair
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise ValueError(f"{who} must be a positive int or a pair (h, w) of them, got {size!r}")
    return int(h), int(w)


#: :func:`resize_images` works on slabs of images whose working memory is about this many bytes (or one image).
RESIZE_SLAB_BYTES = 16 << 20


def _resize_work(shape, h, w, contiguous=False) -> int:
    """Bytes of working memory to resize one (H, W, C) image to (h, w): the rows resized (h, W, C), and a copy
    of the image unless the batch is C-contiguous float32."""
    _, H, W, C = shape
    return 4 * C * (h * W + (0 if contiguous else H * W))


def resize_peak(shape, size, contiguous=False) -> tuple:
    """``(output bytes, peak bytes)`` of :func:`resize_images` on a float32 batch of ``shape`` (N, H, W, C)
    (``contiguous``: C-contiguous, read in place; otherwise each slab is copied): the peak counts the output and
    the work of one slab, not the input (another dtype is first converted whole, which it does not count)."""
    h, w = _size_pair(size)
    n, H, W, C = shape
    if 0 in (H, W, C):  # as resize_images
        raise ValueError(f"resize_peak: images of shape {tuple(shape)} have no pixels (0 rows, columns or channels)")
    out = 4 * n * h * w * C
    if (H, W) == (h, w) or n == 0:
        return out, 0
    per_image = _resize_work(shape, h, w, contiguous)
    step = max(1, RESIZE_SLAB_BYTES // _resize_work(shape, h, w))  # resize_images' slabs
    return out, out + per_image * min(n, step)


def resize_images(x, size) -> np.ndarray:
    """Bilinearly resize a batch (N, H, W, C) to (N, h, w, C) with ``size = h`` or ``(h, w)``.

    For upsampling this matches Pillow's ``Image.resize(..., BILINEAR)``; for downsampling it interpolates
    (no area filter). Two matrix products, ``Y = R_h X R_wᵀ``, on a slab of images at a time
    (:data:`RESIZE_SLAB_BYTES` of working memory), the second written straight into the result, so the memory
    it needs beyond its input and output stays small (:func:`resize_peak`).

    Raises
    ------
    ValueError
        ``size`` not a positive int or a pair of them; ``x`` not (N, H, W, C), or images with 0 rows, columns
        or channels (0 images is fine).
    """
    h, w = _size_pair(size)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"resize_images: expected a batch of images (N, H, W, C), got shape {x.shape}")
    n, H, W, C = x.shape
    if 0 in (H, W, C):
        raise ValueError(f"resize_images: images of shape {x.shape} have no pixels (0 rows, columns or channels)")
    if (H, W) == (h, w):
        return x
    rh = _bilinear_matrix(H, h).astype(np.float32)
    rw = _bilinear_matrix(W, w).astype(np.float32)
    out = np.empty((n, h, w, C), np.float32)
    step = max(1, RESIZE_SLAB_BYTES // _resize_work(x.shape, h, w))
    for start in range(0, n, step):
        k = min(step, n - start)
        rows = np.matmul(rh, x[start:start + k].reshape(k, H, W * C))                  # (k, h, W·C)
        np.matmul(rw, rows.reshape(k * h, W, C), out=out[start:start + k].reshape(k * h, w, C))
    return out


__all__ = ["scale_pixels", "resize_images", "resize_peak", "RESIZE_SLAB_BYTES"]
