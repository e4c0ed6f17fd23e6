"""Data: the built-in digits set (no download), loaders for a user's own files, batching and augmentation.

Every loader returns NHWC ``float32`` images in [0, 1] and ``int64`` labels; :class:`Dataset` carries them
with the class names.

=========================  ==========================================================================
source                     loader
=========================  ==========================================================================
scikit-learn digits        :func:`load_digits` (1,797 real 8×8 scans, resized to 32×32, fixed split)
folder of class folders    :func:`load_folder` (``root/<class>/<image>``, read with Pillow)
``.npz`` arrays            :func:`load_npz` (keys ``x``/``y``, or ``x_train``/``y_train``/``x_test``/``y_test``)
MNIST IDX files            :func:`load_idx`, :func:`load_mnist` (plain or ``.gz``)
CIFAR-10 python batches    :func:`load_cifar10_batch`, :func:`load_cifar10` (a restricted unpickler: no code runs)
=========================  ==========================================================================

:func:`load_dataset` picks the loader for a path. Resizing is bilinear with half-pixel centres (as Pillow
and OpenCV), done for a whole batch at once as two small matrix products: ``Y = R_h X R_wᵀ``.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
from dataclasses import dataclass, field

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


@dataclass
class Dataset:
    """Images and labels.

    Attributes
    ----------
    x : float32 ndarray (N, H, W, C)
    y : int64 ndarray (N,)
    class_names : list of str
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list = field(default_factory=list)

    def __post_init__(self):
        self.x = np.asarray(self.x)
        self.y = np.asarray(self.y, dtype=np.int64)
        if self.x.ndim == 3:
            self.x = self.x[..., None]
        if self.x.ndim != 4:
            raise ValueError(f"Dataset: images must be (N, H, W) or (N, H, W, C), got shape {self.x.shape}")
        if len(self.x) != len(self.y):
            raise ValueError(f"Dataset: {len(self.x)} images but {len(self.y)} labels")
        if not self.class_names:
            k = int(self.y.max()) + 1 if len(self.y) else 0
            self.class_names = [str(i) for i in range(k)]

    def __len__(self):
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    def subset(self, index) -> "Dataset":
        return Dataset(self.x[index], self.y[index], list(self.class_names))


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


def resize_images(x, size) -> np.ndarray:
    """Bilinearly resize a batch (N, H, W, C) to (N, h, w, C) with ``size = h`` or ``(h, w)``.

    For upsampling this matches Pillow's ``Image.resize(..., BILINEAR)``; for downsampling it interpolates
    (no area filter).
    """
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:3] == (h, w):
        return x
    rh = _bilinear_matrix(x.shape[1], h).astype(np.float32)
    rw = _bilinear_matrix(x.shape[2], w).astype(np.float32)
    return np.einsum("ih,nhwc,jw->nijc", rh, x, rw, optimize=True).astype(np.float32)


# -------------------------------------------------------------------------------------------- splitting
def stratified_split(y, test_fraction=0.2, seed=0):
    """Indices ``(train, test)`` with each class split in the same proportion, fixed by ``seed``."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def split(dataset: Dataset, test_fraction=0.2, seed=0):
    """Split a :class:`Dataset` into stratified ``(train, test)`` datasets."""
    tr, te = stratified_split(dataset.y, test_fraction, seed)
    return dataset.subset(tr), dataset.subset(te)


# -------------------------------------------------------------------------------------------- digits
def load_digits(image_size=32, test_fraction=0.2, seed=0):
    """scikit-learn's handwritten digits (1,797 8×8 grey scans, 16 levels), shipped with scikit-learn.

    Parameters
    ----------
    image_size : int, default 32
        The 8×8 images are resized bilinearly to ``image_size``×``image_size``.
    test_fraction : float, default 0.2
    seed : int, default 0
        Fixes the stratified train/test split (360 test images for the defaults).

    Returns
    -------
    train, test : Dataset
        Images (N, image_size, image_size, 1) in [0, 1]: white strokes on black.
    """
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = digits.images.astype(np.float32)[..., None] / 16.0
    x = np.clip(resize_images(x, image_size), 0.0, 1.0)
    full = Dataset(x, digits.target, [str(i) for i in range(10)])
    return split(full, test_fraction, seed)


# -------------------------------------------------------------------------------------------- files
def _to_unit_float(x) -> np.ndarray:
    """uint8 images → float32 in [0, 1]; float images are kept as they are (cast to float32)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32)


def read_image(path, image_size=None, channels=None) -> np.ndarray:
    """Read one image with Pillow as float32 (H, W, C) in [0, 1].

    Parameters
    ----------
    image_size : int or (h, w), optional
        Resize (bilinear) to this size.
    channels : {None, 1, 3}
        1: grayscale ('L'), 3: RGB; None keeps grayscale images grey and makes everything else RGB.
    """
    from PIL import Image

    with Image.open(path) as img:
        if channels is None:
            channels = 1 if img.mode in ("L", "1", "I", "I;16", "F") else 3
        img = img.convert("L" if channels == 1 else "RGB")
        if image_size is not None:
            h, w = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
            img = img.resize((w, h), Image.BILINEAR)
        a = np.asarray(img, dtype=np.float32) / 255.0
    return a[..., None] if a.ndim == 2 else a


def load_folder(root, image_size=None, channels=None) -> Dataset:
    """A folder with one subfolder per class: ``root/<class name>/<image file>``.

    Classes are the subfolder names in sorted order. Images of different sizes need ``image_size``.
    ``channels`` as :func:`read_image` (default: grey if the first image is grey, else RGB).
    """
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"load_folder: {root} has no class subfolders")
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        for fname in sorted(os.listdir(folder)):
            if fname.lower().endswith(IMAGE_EXTENSIONS):
                a = read_image(os.path.join(folder, fname), image_size, channels)
                if channels is None:
                    channels = a.shape[-1]
                images.append(a)
                labels.append(label)
    if not images:
        raise ValueError(f"load_folder: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise ValueError(f"load_folder: images of different sizes {sorted(shapes)[:3]}...; pass image_size")
    return Dataset(np.stack(images), np.array(labels), classes)


def load_npz(path):
    """Arrays from an ``.npz`` (read with ``allow_pickle=False``).

    Keys ``x``, ``y`` (one dataset), or ``x_train``, ``y_train``, ``x_test``, ``y_test`` (a split);
    an optional ``class_names`` string array. uint8 images are scaled to [0, 1].

    Returns
    -------
    Dataset, or (train, test) when the file holds a split.
    """
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        names = [str(s) for s in data["class_names"]] if "class_names" in keys else []
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            return (Dataset(_to_unit_float(data["x_train"]), data["y_train"], names),
                    Dataset(_to_unit_float(data["x_test"]), data["y_test"], names))
        if {"x", "y"} <= keys:
            return Dataset(_to_unit_float(data["x"]), data["y"], names)
    raise KeyError(f"load_npz: {path} needs keys x, y or x_train, y_train, x_test, y_test; has {sorted(keys)}")


def _open_maybe_gz(path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST's format; ``.gz`` allowed): magic ``00 00 type ndim``, big-endian dims, data."""
    with _open_maybe_gz(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"load_idx: {path} is not an IDX file (magic {raw[:4]!r})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    offset = 4 + 4 * ndim
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"load_idx: {path} declares shape {dims} but holds {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype, count=count, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder, stems):
    for name in sorted(os.listdir(folder)):
        for stem in stems:
            if name == stem or name == stem + ".gz" or name.replace(".", "-") == stem:
                return os.path.join(folder, name)
    return None


MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def load_mnist(folder):
    """MNIST (or Fashion-MNIST) IDX files in ``folder`` (``train-images-idx3-ubyte[.gz]`` etc.).

    Returns
    -------
    train, test : Dataset (images (N, 28, 28, 1) in [0, 1])
    """
    out = []
    for part in ("train", "test"):
        img_name, lab_name = MNIST_FILES[part]
        img_path, lab_path = _find(folder, [img_name]), _find(folder, [lab_name])
        if img_path is None or lab_path is None:
            raise FileNotFoundError(f"load_mnist: {folder} lacks {img_name}[.gz] or {lab_name}[.gz]")
        out.append(Dataset(_to_unit_float(load_idx(img_path)), load_idx(lab_path).astype(np.int64)))
    return tuple(out)


# -------------------------------------------------------------------------------------------- CIFAR
class _ArrayStub:
    """Stands in for ``numpy.ndarray`` while unpickling; holds the shape, dtype and raw bytes it is given."""

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def to_array(self):
        _version, shape, dtype, fortran, raw = self.state
        if isinstance(raw, str):  # Python 2 string read with encoding='latin1'
            raw = raw.encode("latin1")
        if isinstance(raw, list):  # object arrays pickle their items as a list: refuse
            raise pickle.UnpicklingError("CIFAR loader: object arrays are not allowed")
        dtype = dtype.to_dtype() if isinstance(dtype, _DtypeStub) else np.dtype(dtype)
        return np.frombuffer(bytes(raw), dtype).reshape(shape, order="F" if fortran else "C").copy()


class _DtypeStub:
    """Stands in for ``numpy.dtype``: only plain numeric type codes become real dtypes."""

    def __init__(self, code, *args):
        if isinstance(code, bytes):
            code = code.decode("ascii")
        if not isinstance(code, str) or code.lstrip("<>|=")[:1] not in tuple("biuf"):
            raise pickle.UnpicklingError(f"CIFAR loader: dtype {code!r} is not allowed")
        self.code, self.order = code, "="

    def __setstate__(self, state):
        order = state[1]
        self.order = order.decode() if isinstance(order, bytes) else order

    def to_dtype(self):
        dt = np.dtype(self.code)
        return dt.newbyteorder(self.order) if self.order in "<>" else dt


def _reconstruct(cls, shape, dtype_code):
    if cls is not _ArrayStub:
        raise pickle.UnpicklingError("CIFAR loader: unexpected _reconstruct target")
    return _ArrayStub()


def _frombuffer(buffer, dtype, shape, order):
    stub = _ArrayStub()
    stub.state = (1, shape, dtype, order == "F", buffer)
    return stub


def _latin1_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("CIFAR loader: unexpected _codecs.encode call")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that imports nothing: the only globals it resolves are harmless stand-ins of its own.

    CIFAR-10's python batches are pickled dicts of lists, bytes and NumPy uint8 arrays. A NumPy array pickles
    as ``numpy.core.multiarray._reconstruct(ndarray, ...)`` plus a state tuple holding its raw bytes; here
    those names map to :class:`_ArrayStub` / :class:`_DtypeStub`, which only record numbers and bytes and
    build the array with ``np.frombuffer``. Any other global (``os.system``, ...) raises
    ``pickle.UnpicklingError``, so a malicious file cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _ArrayStub,
        ("numpy", "dtype"): _DtypeStub,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _realise(obj):
    """Turn stubs into arrays, recursively through dicts, lists and tuples."""
    if isinstance(obj, _ArrayStub):
        return obj.to_array()
    if isinstance(obj, dict):
        return {_realise(k): _realise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_realise(v) for v in obj)
    return obj


def safe_unpickle(data: bytes):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (bytes keys kept as bytes)."""
    return _realise(RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load())


def load_cifar10_batch(path) -> Dataset:
    """One CIFAR-10 python batch (``data_batch_1`` ... ``test_batch``): images (N, 32, 32, 3) in [0, 1].

    The file's ``data`` is (N, 3072) uint8, each row the 1,024 red, then green, then blue values.
    """
    with _open_maybe_gz(path) as f:
        batch = safe_unpickle(f.read())
    if not isinstance(batch, dict):
        raise ValueError(f"load_cifar10_batch: {path} does not hold a dict")
    batch = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
    labels = batch.get("labels", batch.get("fine_labels"))
    if "data" not in batch or labels is None:
        raise KeyError(f"load_cifar10_batch: {path} lacks 'data' or 'labels' (has {sorted(batch)})")
    data = batch["data"]
    data = np.asarray(data if not isinstance(data, (bytes, bytearray)) else np.frombuffer(data, np.uint8),
                      dtype=np.uint8)
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Dataset(_to_unit_float(x), np.asarray(labels, dtype=np.int64))


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10(folder):
    """CIFAR-10 python batches in ``folder`` (``data_batch_1..5`` and ``test_batch``).

    Returns
    -------
    train, test : Dataset
    """
    names = sorted(n for n in os.listdir(folder) if n.startswith("data_batch"))
    if not names or not os.path.exists(os.path.join(folder, "test_batch")):
        raise FileNotFoundError(f"load_cifar10: {folder} needs data_batch_* and test_batch")
    parts = [load_cifar10_batch(os.path.join(folder, n)) for n in names]
    train = Dataset(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]), CIFAR10_CLASSES)
    test = load_cifar10_batch(os.path.join(folder, "test_batch"))
    test.class_names = list(CIFAR10_CLASSES)
    return train, test


# -------------------------------------------------------------------------------------------- dispatch
def load_dataset(source="digits", image_size=None, test_fraction=0.2, seed=0):
    """Load ``'digits'`` or a path and return ``(train, test)``.

    A path may be an ``.npz`` file, a folder with MNIST IDX files, a folder with CIFAR-10 batches, or a
    folder of class subfolders. Sources without their own test set are split (stratified, ``seed``).
    ``image_size`` resizes every image (digits default to 32).
    """
    if source == "digits":
        return load_digits(image_size or 32, test_fraction, seed)
    if not os.path.exists(source):
        raise FileNotFoundError(f"load_dataset: no such file or folder: {source!r} (or use 'digits')")
    if os.path.isfile(source):
        if not source.endswith(".npz"):
            raise ValueError(f"load_dataset: a file must be an .npz with x/y arrays, got {source!r}")
        result = load_npz(source)
    elif _find(source, [MNIST_FILES["train"][0]]):
        result = load_mnist(source)
    elif os.path.exists(os.path.join(source, "test_batch")):
        result = load_cifar10(source)
    else:
        result = load_folder(source, image_size=image_size)
    train, test = result if isinstance(result, tuple) else split(result, test_fraction, seed)
    if image_size is not None:
        train.x, test.x = resize_images(train.x, image_size), resize_images(test.x, image_size)
    return train, test


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


__all__ = ["Dataset", "load_digits", "load_folder", "load_npz", "load_idx", "load_mnist", "load_cifar10_batch",
           "load_cifar10", "load_dataset", "read_image", "resize_images", "stratified_split", "split",
           "safe_unpickle", "RestrictedUnpickler", "Normalizer", "Augment", "random_crop", "random_flip",
           "iterate_batches", "num_batches"]
