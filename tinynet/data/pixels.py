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
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise ValueError(f"{who} must be a positive int or a pair (h, w) of them, got {size!r}")
    return int(h), int(w)


def resize_images(x, size) -> np.ndarray:
    """Bilinearly resize a batch (N, H, W, C) to (N, h, w, C) with ``size = h`` or ``(h, w)``.

    For upsampling this matches Pillow's ``Image.resize(..., BILINEAR)``; for downsampling it interpolates
    (no area filter).
    """
    h, w = _size_pair(size)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:3] == (h, w):
        return x
    rh = _bilinear_matrix(x.shape[1], h).astype(np.float32)
    rw = _bilinear_matrix(x.shape[2], w).astype(np.float32)
    return np.einsum("ih,nhwc,jw->nijc", rh, x, rw, optimize=True).astype(np.float32)


__all__ = ["scale_pixels", "resize_images"]
