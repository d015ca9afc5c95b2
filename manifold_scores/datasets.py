"""Real data that installs with the package: handwritten digits, natural-image patches, and
a loader for a user's own ``.npy`` / ``.npz`` array.

Every loader returns a :class:`Dataset` ``(train, test, info)``: ``train`` and ``test`` are
NumPy float arrays of flat vectors, shape ``(n, d)`` (what the losses, ``fit`` and the models
take), split at random from a JAX PRNG ``key`` (the same key gives the same split, another key
another one; the two parts never share a row); ``info`` is a dict of metadata: ``name``,
``image_shape`` (``(H, W, C)`` of one example, or ``None`` for data that are not images; the
U-Net of :mod:`manifold_scores.models.unet` takes it as its ``shape``), ``range`` (the interval
the values lie in, where one is known), ``source`` and the per-loader entries listed below.

* :func:`digits`: the 1,797 8 x 8 handwritten digits bundled with scikit-learn (UCI optical
  recognition of handwritten digits), grey levels ``0..16`` mapped linearly to ``[-1, 1]``.
* :func:`image_patches`: square patches cut from the two photographs bundled with scikit-learn
  (``china.jpg`` and ``flower.jpg``, 427 x 640), grey or colour, contrast-normalised.
* :func:`load_array`: a user's array; no extra needed.

:func:`digits` and :func:`image_patches` read files shipped inside scikit-learn and never touch
the network; scikit-learn (and Pillow, which decodes the photographs) come with the ``data``
extra: ``pip install "manifold-scores[data]"``.

Example:
    >>> import jax
    >>> from manifold_scores import datasets
    >>> ds = datasets.digits()  # doctest: +SKIP
    >>> ds.train.shape, ds.test.shape, ds.info["image_shape"]  # doctest: +SKIP
    ((1438, 64), (359, 64), (8, 8, 1))
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import numpy as np

from manifold_scores._api import public_dir as _public_dir

__all__ = ["Dataset", "EXTRA_HINT", "REQUIRES", "VARIANCE_FLOOR", "digits", "image_patches",
           "load_array"]

EXTRA_HINT = 'pip install "manifold-scores[data]"'

#: ``(module, extra)`` pairs that :func:`digits` and :func:`image_patches` need (what an
#: experiment on them declares, so that ``verify`` can skip it and name the extra)
REQUIRES = (("sklearn", "data"), ("PIL", "data"))

# Contrast normalisation floor on the patch variance, in units of [0, 1] intensities: the
# "+ 10" of Coates, Lee and Ng (2011, "An analysis of single-layer networks in unsupervised
# feature learning") on the 0..255 scale. Flat patches are shrunk towards 0, not blown up.
VARIANCE_FLOOR = 10.0 / 255.0**2

# ITU-R BT.601 luma weights: grey level of an RGB pixel.
_LUMA = np.array([0.299, 0.587, 0.114])


class Dataset(NamedTuple):
    """A seeded train / held-out split of flat examples and its metadata.

    Attributes:
        train: ``(n_train, d)`` float array.
        test: ``(n_test, d)`` float array (held out: no row of ``train``).
        info: metadata (``name``, ``image_shape``, ``range``, ``source``, ...).
    """

    train: np.ndarray
    test: np.ndarray
    info: dict[str, Any]


def _sklearn_datasets():
    """``sklearn.datasets``, or an error naming the extra that installs it."""
    try:
        import sklearn.datasets as skd
    except ImportError as err:
        raise ModuleNotFoundError(
            f"manifold_scores.datasets needs scikit-learn for its bundled data sets: "
            f"{EXTRA_HINT} ({err})", name="sklearn") from err
    return skd


def _sample_images() -> list[np.ndarray]:
    skd = _sklearn_datasets()
    try:
        import PIL  # noqa: F401 - sklearn decodes the JPEGs with Pillow
    except ImportError as err:
        raise ModuleNotFoundError(
            f"image_patches needs Pillow to decode scikit-learn's photographs: {EXTRA_HINT} "
            f"({err})", name="PIL") from err
    return [np.asarray(im) for im in skd.load_sample_images().images]


def _check_key(key) -> jax.Array:
    if key is None:
        return jax.random.key(0)
    try:
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(f"key must be a single PRNG key, got shape {key.shape}")
            return key
        if key.dtype == np.uint32 and key.shape == (2,):
            return jax.random.wrap_key_data(key)
    except AttributeError:
        pass
    raise ValueError(f"key must be a JAX PRNG key (jax.random.key(seed)), got {key!r}")


def _check_fraction(test_fraction, n: int) -> int:
    """Number of held-out rows: ``round(test_fraction * n)``, at least 1 and at most n - 1."""
    try:
        f = float(test_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}") \
            from None
    if not 0.0 < f < 1.0:  # also refuses NaN
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = round(f * n)
    if not 1 <= n_test <= n - 1:
        raise ValueError(f"test_fraction={f} leaves an empty part of {n} examples "
                         f"({n_test} held out)")
    return n_test


def _split(key, n: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.asarray(jax.random.permutation(key, n))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def digits(key=None, *, test_fraction: float = 0.2, dtype=np.float32) -> Dataset:
    """The 1,797 handwritten digits of scikit-learn as 64-vectors in ``[-1, 1]``.

    Each 8 x 8 image (grey levels ``0..16``, row-major, one channel) is mapped by
    ``x / 8 - 1``. The rows are split at random from ``key`` (default ``jax.random.key(0)``):
    ``round(test_fraction * 1797)`` held out.

    ``info``: ``name="digits"``, ``image_shape=(8, 8, 1)``, ``range=(-1.0, 1.0)``,
    ``train_labels`` / ``test_labels`` (the digit, ``0..9``), ``train_index`` /
    ``test_index`` (rows of ``sklearn.datasets.load_digits()``), ``source``.
    """
    key = _check_key(key)
    raw = _sklearn_datasets().load_digits()
    x = np.asarray(raw.data, np.float64) / 8.0 - 1.0
    labels = np.asarray(raw.target, np.int64)
    n = x.shape[0]
    train, test = _split(key, n, _check_fraction(test_fraction, n))
    x = x.astype(dtype)
    info = {"name": "digits", "image_shape": (8, 8, 1), "range": (-1.0, 1.0),
            "train_labels": labels[train], "test_labels": labels[test],
            "train_index": train, "test_index": test,
            "source": "sklearn.datasets.load_digits (UCI optical recognition of handwritten "
                      "digits), grey levels 0..16 mapped by x / 8 - 1"}
    return Dataset(x[train], x[test], info)


def _check_int(value, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _patch_positions(rng, images, size, count, region):
    """``count`` distinct top-left corners ``(image, row, col)``, uniform over the positions
    whose patch lies inside ``region(image_index, width) -> column mask``."""
    pools = []
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        inside = region(i, w)  # (w,) bool: columns the part may use
        # a patch starting at column c uses columns c .. c + size - 1
        win = np.lib.stride_tricks.sliding_window_view(inside, size).all(-1)
        cols = np.flatnonzero(win)
        pools.append((i, h - size + 1, cols))
    total = sum(rows * len(cols) for _, rows, cols in pools)
    if count > total:
        return None, total
    flat = np.sort(rng.choice(total, size=count, replace=False))
    out = np.empty((count, 3), np.int64)
    start = 0
    for i, rows, cols in pools:
        block = rows * len(cols)
        sel = flat[(flat >= start) & (flat < start + block)] - start
        idx = slice(np.searchsorted(flat, start), np.searchsorted(flat, start + block))
        out[idx, 0] = i
        out[idx, 1] = sel // len(cols)
        out[idx, 2] = cols[sel % len(cols)]
        start += block
    return rng.permutation(out), total


def _cut(images, positions, size):
    return np.stack([images[i][r:r + size, c:c + size] for i, r, c in positions])


def image_patches(size: int, count: int, key=None, *, colour: bool = False,
                  normalise: bool = True, test_fraction: float = 0.2,
                  dtype=np.float32) -> Dataset:
    """``count`` square patches of ``size`` x ``size`` pixels from scikit-learn's photographs.

    The photographs (``china.jpg``, ``flower.jpg``, 427 x 640 RGB) are read as intensities in
    ``[0, 1]``; grey patches use the luma ``0.299 R + 0.587 G + 0.114 B`` (one channel), colour
    patches keep the three channels. Corners are drawn from ``key`` uniformly and without
    repetition among all positions of both photographs.

    Held-out patches are cut from a band of columns of each photograph, ``round(test_fraction
    * 640)`` wide, at an offset drawn from ``key``; training patches lie entirely outside the
    band, so no held-out patch shares a pixel with a training patch. ``round(test_fraction *
    count)`` patches are held out.

    Contrast normalisation (``normalise=True``, the usual preprocessing of patch studies): each
    patch ``p`` (all pixels and channels together) becomes ``(p - mean(p)) / sqrt(var(p) +
    VARIANCE_FLOOR)`` with ``VARIANCE_FLOOR = 10 / 255**2`` (the floor of Coates, Lee and Ng,
    2011, on a 0..255 scale), so textured patches have mean 0 and standard deviation close to
    1 over their entries while flat patches stay near 0 instead of amplifying noise. With
    ``normalise=False`` the patches are the raw intensities in ``[0, 1]``.

    Args:
        size: patch side in pixels, ``2 <= size <= 64``.
        count: number of patches (train and held-out together), ``>= 2``.
        key: JAX PRNG key (default ``jax.random.key(0)``).
        colour: three channels instead of the grey level.
        normalise: contrast-normalise as above.
        test_fraction: share held out, in ``(0, 1)``.
        dtype: floating dtype of the arrays.

    Returns:
        :class:`Dataset` of ``(n, size * size * C)`` rows (row-major ``(size, size, C)``).
        ``info``: ``name="image_patches"``, ``image_shape=(size, size, C)``, ``range`` (``(0,
        1)`` raw; ``None`` normalised), ``normalise``, ``variance_floor``, ``train_positions``
        / ``test_positions`` (``(n, 3)``: photograph, row, column of the top-left pixel),
        ``test_band`` (first held-out column in each photograph), ``band_width``, ``source``.
    """
    size = _check_int(size, "size", 2)
    if size > 64:
        raise ValueError(f"size must be at most 64 (the held-out band is 128 columns wide at "
                         f"the default test_fraction), got {size}")
    count = _check_int(count, "count", 2)
    if not isinstance(colour, (bool, np.bool_)):
        raise ValueError(f"colour must be True or False, got {colour!r}")
    if not isinstance(normalise, (bool, np.bool_)):
        raise ValueError(f"normalise must be True or False, got {normalise!r}")
    key = _check_key(key)
    n_test = _check_fraction(test_fraction, count)
    photos = _sample_images()
    width = photos[0].shape[1]
    band = round(float(test_fraction) * width)
    if band < size:
        raise ValueError(f"test_fraction={test_fraction} gives a held-out band of {band} "
                         f"columns, narrower than size={size}")
    # one NumPy generator from the key: the draws over ~5e5 positions are host work
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    rng = np.random.default_rng(seed)
    offsets = [int(rng.integers(0, im.shape[1] - band + 1)) for im in photos]

    def in_band(i, w):
        cols = np.arange(w)
        return (cols >= offsets[i]) & (cols < offsets[i] + band)

    test_pos, test_total = _patch_positions(rng, photos, size, n_test, in_band)
    train_pos, train_total = _patch_positions(rng, photos, size, count - n_test,
                                              lambda i, w: ~in_band(i, w))
    if test_pos is None or train_pos is None:
        raise ValueError(f"count={count} is more than the distinct {size}x{size} patches "
                         f"available ({train_total} for training, {test_total} held out at "
                         f"test_fraction={test_fraction})")
    if colour:
        images = [im.astype(np.float64) / 255.0 for im in photos]
    else:
        images = [(im.astype(np.float64) @ _LUMA)[..., None] / 255.0 for im in photos]

    def prepare(pos):
        p = _cut(images, pos, size).reshape(len(pos), -1)
        if normalise:
            p = p - p.mean(-1, keepdims=True)
            p = p / np.sqrt(p.var(-1, keepdims=True) + VARIANCE_FLOOR)
        return p.astype(dtype)

    channels = 3 if colour else 1
    info = {"name": "image_patches", "image_shape": (size, size, channels),
            "range": None if normalise else (0.0, 1.0), "normalise": bool(normalise),
            "variance_floor": VARIANCE_FLOOR if normalise else None,
            "train_positions": train_pos, "test_positions": test_pos,
            "test_band": tuple(offsets), "band_width": band,
            "source": "sklearn.datasets.load_sample_images (china.jpg, flower.jpg), "
                      + ("RGB" if colour else "luma 0.299 R + 0.587 G + 0.114 B")
                      + (", contrast-normalised (p - mean) / sqrt(var + 10 / 255^2)"
                         if normalise else ", intensities in [0, 1]")}
    return Dataset(prepare(train_pos), prepare(test_pos), info)


def load_array(path: str | os.PathLike, key=None, *, array: str | None = None,
               test_fraction: float = 0.2, image_shape: tuple[int, ...] | None = None
               ) -> Dataset:
    """A user's examples from a ``.npy`` or ``.npz`` file, flattened and split from ``key``.

    The array's first axis indexes examples; the rest is one example, flattened row-major.
    ``image_shape`` in ``info`` is ``image_shape`` when given (its product must equal the
    example size), else ``(H, W, C)`` for an ``(n, H, W, C)`` array, ``(H, W, 1)`` for
    ``(n, H, W)``, and ``None`` for ``(n, d)``. Integer and boolean arrays become float32;
    floating arrays keep their dtype. The file is read with ``allow_pickle=False``.

    Args:
        path: a ``.npy`` or ``.npz`` file.
        key: JAX PRNG key of the split (default ``jax.random.key(0)``).
        array: the member of an ``.npz`` to load (needed when it holds several).
        test_fraction: share held out, in ``(0, 1)``.
        image_shape: the shape of one example as an image, ``(H, W, C)``.

    ``info``: ``name`` (the file's base name, with ``:member`` for an ``.npz``), ``image_shape``,
    ``shape`` (one example's shape in the file), ``range`` (min and max of the data),
    ``train_index`` / ``test_index`` (rows of the file), ``source`` (the path).
    """
    key = _check_key(key)
    fspath = os.fspath(path)
    if not os.path.isfile(fspath):
        raise ValueError(f"path must be an existing .npy or .npz file, got {fspath!r}")
    name = os.path.basename(fspath)
    try:
        loaded = np.load(fspath, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"path must be a .npy or .npz file NumPy can read ({err})") from None
    if isinstance(loaded, np.ndarray):
        if array is not None:
            raise ValueError(f"array names a member of an .npz, but {name} is a .npy file")
        data = loaded
    else:
        with loaded:
            members = list(loaded.files)
            if array is None:
                if len(members) != 1:
                    raise ValueError(f"array must name one of the arrays in {name}: {members}")
                array = members[0]
            if array not in members:
                raise ValueError(f"array must name one of the arrays in {name}: {members}, "
                                 f"got {array!r}")
            data = np.asarray(loaded[array])
        name = f"{name}:{array}"
    return _from_array(data, key, name, fspath, test_fraction, image_shape)


def _from_array(data, key, name, source, test_fraction, image_shape):
    if data.dtype.kind not in "biuf":
        raise ValueError(f"path must hold a numeric array, got dtype {data.dtype}")
    if data.ndim < 2:
        raise ValueError(f"path must hold an array of shape (n, ...) with n examples, got shape "
                         f"{data.shape}")
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"path holds {int(np.sum(~np.isfinite(data)))} NaN or infinite values")
    n, example = data.shape[0], data.shape[1:]
    d = int(np.prod(example))
    if image_shape is not None:
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1 or int(np.prod(image_shape)) != d:
            raise ValueError(f"image_shape must be (H, W, C) with H * W * C = {d}, got "
                             f"{image_shape}")
    elif data.ndim == 4:
        image_shape = tuple(example)
    elif data.ndim == 3:
        image_shape = (*example, 1)
    n_test = _check_fraction(test_fraction, n)
    train, test = _split(key, n, n_test)
    flat = data.reshape(n, d)
    info = {"name": name, "image_shape": image_shape, "shape": tuple(example),
            "range": (float(flat.min()), float(flat.max())), "train_index": train,
            "test_index": test, "source": source}
    return Dataset(flat[train], flat[test], info)


__dir__ = _public_dir(__all__)
