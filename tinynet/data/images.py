"""Image files read with Pillow: one file (:func:`read_image`) or a folder of class folders (:func:`load_folder`).

Pixels are read as numbers and scaled by :func:`tinynet.data.pixels.scale_pixels`; colour conversion and
resizing are done in floating point, so 16-bit precision survives. Pillow is imported only when a file is read.
"""
from __future__ import annotations

import os
import stat

import numpy as np

from ..fileio import FileFormatError, file_kind, open_regular
from ._common import _bound, _human_bytes
from .dataset import Dataset
from .pixels import _size_pair, _value_range, scale_pixels


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
#: The Pillow formats read (those of :data:`IMAGE_EXTENSIONS`, whatever a file's extension): the content decides
#: among them, but nothing else is decoded (an EPS named ``.png`` would run Ghostscript; ICO, PSD, FITS, ... are
#: not images this loader promises to read).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


# -------------------------------------------------------------------------------------------- image files
#: Pillow modes whose pixels are read as they are (``'I;16*'`` too); others are converted first.
_NATIVE_MODES = ("1", "L", "LA", "I", "F", "RGB", "RGBA", "RGBX")
#: Pillow modes converted before reading (8-bit data: nothing is lost).
_CONVERTED_MODES = {"P": None, "PA": "RGBA", "RGBa": "RGBA", "La": "LA"}


def _open_image_pixels(path, max_bytes, want_channels=None, size=None):
    """Decode one image file with Pillow; return its raw pixels (H, W) or (H, W, C) and Pillow's mode.

    The peak memory of reading it (:func:`_decode_peak`; ``size``: resized to it after) is checked against
    ``max_bytes`` from the header, before the pixels are decoded.
    """
    with open_regular(path) as f:  # a FIFO, a device or a folder is refused before a byte is read
        if os.fstat(f.fileno()).st_size == 0:
            raise FileFormatError(f"{path}: empty file (0 bytes), not an image")
        return _decode(f, path, max_bytes, want_channels, size)


def _decode_peak(width, height, bands, want_channels, size) -> int:
    """The bytes reading one image holds at its peak: Pillow's decoded pixels and a converted copy (at most 4
    bytes a pixel each), the NumPy copy, the float32 image and its colour conversion, and the resized image."""
    channels = max(bands, want_channels or 1)
    peak = width * height * (12 + 8 * channels)
    if size is not None:
        peak += 8 * size[0] * size[1] * channels
    return peak


def _decode(f, path, max_bytes, want_channels, size=None):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f, formats=IMAGE_FORMATS) as img:
            need = _decode_peak(img.size[0], img.size[1], len(img.getbands()), want_channels, size)
            if need > max_bytes:
                raise FileFormatError(f"{path}: reading a {img.size[0]}x{img.size[1]} image needs "
                                      f"{_human_bytes(need)} at its peak (decoded, as float32, converted), more "
                                      f"than the cap of {_human_bytes(max_bytes)}")
            img.load()
            mode = img.mode
            if mode in _CONVERTED_MODES:
                target = _CONVERTED_MODES[mode] or ("RGBA" if "transparency" in img.info else "RGB")
                img = img.convert(target)
            elif mode not in _NATIVE_MODES and not mode.startswith("I;16"):
                img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV: 8-bit, converted by Pillow
            return np.asarray(img), mode
    except (MemoryError, FileFormatError):
        raise
    except PermissionError:
        raise FileFormatError(f"{path}: cannot be read (permission denied)") from None
    except UnidentifiedImageError:
        raise FileFormatError(f"{path}: not an image Pillow can read (unknown format, or a corrupt header; read are "
                              f"{', '.join(IMAGE_FORMATS)})") from None
    except Image.DecompressionBombError as error:
        raise FileFormatError(f"{path}: too large an image, refused before decoding ({error})") from None
    except Exception as error:  # Pillow raises many types on damaged files (OSError, SyntaxError, ValueError, ...)
        raise FileFormatError(f"{path}: corrupt or truncated image ({type(error).__name__}: {error})") from None


def _image_to_unit(a, mode, path) -> np.ndarray:
    """Raw Pillow pixels → float32 (H, W, C) in [0, 1], C = 1 or 3 (alpha and padding channels dropped)."""
    if mode == "I":  # Pillow's 32-bit container for 16-bit PGM/PNG data
        lo, hi = _value_range(a, path)
        if lo < 0 or hi > 65535:
            raise FileFormatError(f"{path}: 32-bit integer pixels in [{lo:g}, {hi:g}]; only values in [0, 65535] "
                                  f"(16-bit data) are read: save the image as 16-bit or as float")
        x = a.astype(np.float32) / np.float32(65535)
    else:
        x = scale_pixels(a, path)
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[-1] == 2:    # LA: drop alpha
        x = x[..., :1]
    elif x.shape[-1] == 4:  # RGBA / RGBX: drop alpha (or padding)
        x = x[..., :3]
    return x


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as Pillow's convert('L')


def _check_channels(who, channels):
    """Raise ``ValueError`` unless ``channels`` is None, 1 or 3 as an integer (``True == 1`` and ``3.0 == 3``,
    but they are not channel counts)."""
    valid = channels is None or (isinstance(channels, (int, np.integer)) and not isinstance(channels, bool)
                                 and channels in (1, 3))
    if not valid:
        raise ValueError(f"{who}: channels must be None, 1 or 3, got {channels!r}")


def _to_channels(x, channels):
    if channels is None or x.shape[-1] == channels:
        return x
    if channels == 1:
        return (x @ _LUMA)[..., None].astype(np.float32)
    return np.repeat(x, 3, axis=-1)


def _resize_one(x, size):
    """Resize one (H, W, C) float image with Pillow's bilinear filter, channel by channel in mode 'F'."""
    from PIL import Image

    h, w = size
    if x.shape[:2] == (h, w):
        return x
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c])).resize((w, h), Image.BILINEAR))
              for c in range(x.shape[-1])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def read_image(path, image_size=None, channels=None, max_bytes=None) -> np.ndarray:
    """Read one image with Pillow as float32 (H, W, C) in [0, 1], scaled from its real range.

    Pixels are read as numbers first and scaled as the module's table says (16-bit ÷ 65535, float TIFFs kept
    or ÷ 255, ...); colour conversion and resizing are done in floating point, so nothing is clipped to 8 bits.

    Parameters
    ----------
    path : str
    image_size : int or (h, w), optional
        Resize (Pillow's bilinear filter, in float) to this size.
    channels : {None, 1, 3}
        1: grey (0.299 R + 0.587 G + 0.114 B), 3: RGB (grey repeated); None keeps grey images grey
        (modes '1', 'L', 'LA', 'I', 'I;16*', 'F') and makes every other image RGB.
    max_bytes : int, optional
        Refuse, from its header, an image whose reading would hold more at its peak: the decoded pixels and a
        converted copy, the float32 image and its colour conversion, the resized image (about 36 bytes a pixel
        for RGB; default :func:`tinynet.fileio.memory_bound`).

    Returns
    -------
    float32 ndarray (H, W, C)

    Raises
    ------
    ValueError
        ``channels`` not None, 1 or 3 (``True`` and ``3.0`` included).
    tinynet.fileio.FileFormatError
        The file is missing, empty, not an image, truncated or corrupt, too large, or holds pixel values that
        cannot be scaled (NaN, negative, out of range); the message starts with the path.
    """
    _check_channels("read_image", channels)
    size = None if image_size is None else _size_pair(image_size)
    path = os.fspath(path)
    a, mode = _open_image_pixels(path, _bound(max_bytes), channels, size)
    x = _to_channels(_image_to_unit(a, mode, path), channels)
    return _resize_one(x, size) if size is not None else x


#: What one image file costs a folder's load besides its pixels (its path, its label, list slots), in bytes.
_PER_FILE_BYTES = 1024


def _image_files(folder):
    """The image files of a folder, sorted (hidden files and files of other extensions are not images).

    Every other entry must be a regular file (or a link to one): a folder, a FIFO, a device, a socket or a
    dangling link with an image extension raises :class:`FileFormatError` naming it (nothing is skipped
    silently)."""
    names = sorted(f for f in os.listdir(folder) if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    for name in names:
        path = os.path.join(folder, name)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise FileFormatError(f"{path}: no such file" + (", a dangling symbolic link" if os.path.islink(path)
                                                             else "") + "; it has an image extension but cannot "
                                  "be read") from None
        except OSError as error:
            raise FileFormatError(f"{path}: cannot be read ({error.strerror or error})") from None
        if not stat.S_ISREG(mode):
            raise FileFormatError(f"{path}: not a regular file but {file_kind(mode)}; it has an image extension "
                                  f"but is not an image file (remove it or rename it)")
    return names


def load_folder(root, image_size=None, channels=None, max_bytes=None) -> Dataset:
    """A folder with one subfolder per class: ``root/<class name>/<image file>``.

    Classes are the subfolder names in sorted order, kept exactly as they are (control characters and any
    Unicode included). Hidden folders and files (names starting with ``.``) and files without an image
    extension are not read; every other entry of a class folder must be a readable image file: a folder,
    FIFO, device or dangling link named like an image is an error, not skipped.

    Parameters
    ----------
    root : str
    image_size : int or (h, w), optional
        Resize every image; needed when they differ in size.
    channels : {None, 1, 3}
        As :func:`read_image`; None: RGB if any image is colour (grey ones are repeated), else grey.
    max_bytes : int, optional
        Cap on the memory the load holds at its peak (default :func:`tinynet.fileio.memory_bound`): the float32
        images twice (the images read and the array they are stacked into; :func:`load_dataset`'s train/test
        split needs as much), and the image being read (see :func:`read_image`).

    Raises
    ------
    ValueError
        ``channels`` not None, 1 or 3.
    tinynet.fileio.FileFormatError
        ``root`` is not a folder or has no class subfolders; a class folder holds no images; an entry named
        like an image is not a regular file; an image cannot be read (see :func:`read_image`; the error names
        the file); images differ in size and no ``image_size`` is given; the load would exceed ``max_bytes``.
    """
    _check_channels("load_folder", channels)
    root = os.fspath(root)
    budget = _bound(max_bytes)
    if not os.path.isdir(root):
        raise FileFormatError(f"{root}: not a folder")
    try:
        entries = sorted(os.listdir(root))
    except OSError as error:
        raise FileFormatError(f"{root}: cannot list the folder ({error.strerror})") from None
    classes = [d for d in entries if not d.startswith(".") and os.path.isdir(os.path.join(root, d))]
    if not classes:
        raise FileFormatError(f"{root}: no class subfolders (expected {root}/<class name>/<image files>)")
    images, labels, files = [], [], []
    pixels, colour, held = 0, channels == 3, 0
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        try:
            names = _image_files(folder)
        except OSError as error:
            raise FileFormatError(f"{folder}: cannot list the folder ({error.strerror})") from None
        if not names:
            raise FileFormatError(f"{folder}: the class folder {name!r} holds no images "
                                  f"({', '.join(IMAGE_EXTENSIONS)})")
        for fname in names:
            path = os.path.join(folder, fname)
            a = read_image(path, image_size, channels, max_bytes=budget - held)
            pixels += a.shape[0] * a.shape[1]
            colour = colour or a.shape[-1] == 3
            # the images are held twice at the peak: the list and the stacked array here, then the whole set and
            # its train/test copies while load_dataset splits it; grey images become RGB when any is colour
            held = 2 * 4 * pixels * (3 if colour else 1) + _PER_FILE_BYTES * (len(files) + 1)
            if held > budget:
                raise FileFormatError(f"{root}: the images need more than {_human_bytes(budget)} (the cap for this "
                                      f"load: the float32 images, held twice while they are stacked and split); "
                                      f"pass image_size to make them smaller")
            images.append(a)
            labels.append(label)
            files.append(path)
    if channels is None and any(a.shape[-1] == 3 for a in images):
        images = [_to_channels(a, 3) for a in images]
    first = images[0].shape
    other = next((i for i, a in enumerate(images) if a.shape[:2] != first[:2]), None)
    if other is not None:
        raise FileFormatError(f"{root}: images of different sizes ({files[0]} is {first[0]}x{first[1]}, "
                              f"{files[other]} is {images[other].shape[0]}x{images[other].shape[1]}); "
                              f"pass image_size (--image-size) to resize them all")
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), classes)


__all__ = ["IMAGE_EXTENSIONS", "IMAGE_FORMATS", "read_image", "load_folder"]
