"""The bundled data sets and the array loader: shapes, ranges, seeded disjoint splits, the
missing-extra message, and no network access."""

from __future__ import annotations

import importlib.util
import socket
import sys

import jax
import numpy as np
import pytest

from manifold_scores import datasets

needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason='needs the data extra: pip install "manifold-scores[data]"')


def _rows(a):
    return {row.tobytes() for row in np.asarray(a)}


@pytest.fixture(scope="module")
def digits0():
    pytest.importorskip("sklearn")
    return datasets.digits(jax.random.key(0))


@needs_sklearn
def test_digits_shapes_range_and_labels(digits0):
    train, test, info = digits0
    assert train.shape == (1438, 64) and test.shape == (359, 64)
    assert train.dtype == np.float32 and info["image_shape"] == (8, 8, 1)
    both = np.concatenate([train, test])
    assert both.min() == -1.0 and both.max() == 1.0
    # independent reference: sklearn's raw grey levels 0..16, mapped by x / 8 - 1
    from sklearn.datasets import load_digits

    raw = load_digits()
    np.testing.assert_array_equal(train, (raw.data[info["train_index"]] / 8 - 1).astype("f4"))
    np.testing.assert_array_equal(info["test_labels"], raw.target[info["test_index"]])
    assert sorted(set(info["train_labels"].tolist())) == list(range(10))


@needs_sklearn
def test_digits_split_disjoint_and_seeded(digits0):
    info = digits0.info
    assert not set(info["train_index"]) & set(info["test_index"])
    assert len(info["train_index"]) + len(info["test_index"]) == 1797
    again = datasets.digits(jax.random.key(0))
    np.testing.assert_array_equal(again.test, digits0.test)
    other = datasets.digits(jax.random.key(1))
    assert not np.array_equal(other.info["test_index"], info["test_index"])
    default = datasets.digits()
    np.testing.assert_array_equal(default.info["test_index"], info["test_index"])
    half = datasets.digits(jax.random.key(0), test_fraction=0.5)
    assert half.test.shape[0] == round(0.5 * 1797)


@needs_sklearn
def test_patches_grey_normalised():
    ds = datasets.image_patches(8, 2000, jax.random.key(3))
    assert ds.train.shape == (1600, 64) and ds.test.shape == (400, 64)
    assert ds.info["image_shape"] == (8, 8, 1) and ds.train.dtype == np.float32
    for part in (ds.train, ds.test):
        assert np.all(np.isfinite(part))
        np.testing.assert_allclose(part.mean(-1), 0.0, atol=1e-5)
        # std over a patch's entries: sqrt(var / (var + floor)) < 1
        assert np.all(part.std(-1) < 1.0)
    assert np.median(ds.train.std(-1)) > 0.5  # most patches are textured
    assert not _rows(ds.train) & _rows(ds.test)


@needs_sklearn
def test_patches_reference_pixels_and_disjoint_regions():
    size = 6
    ds = datasets.image_patches(size, 300, jax.random.key(4), colour=True, normalise=False)
    assert ds.train.shape == (240, size * size * 3) and ds.info["range"] == (0.0, 1.0)
    assert ds.train.min() >= 0.0 and ds.train.max() <= 1.0
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    (i, r, c), row = ds.info["test_positions"][0], ds.test[0]
    ref = photos[i][r:r + size, c:c + size].astype(np.float64) / 255
    np.testing.assert_allclose(row.reshape(size, size, 3), ref, rtol=1e-6)
    # held-out patches lie inside each photograph's band, training patches outside it
    band, width = ds.info["test_band"], ds.info["band_width"]
    for i, _, c in ds.info["test_positions"]:
        assert band[i] <= c and c + size <= band[i] + width
    for i, _, c in ds.info["train_positions"]:
        assert c + size <= band[i] or c >= band[i] + width
    pos = [tuple(p) for p in ds.info["train_positions"]]
    assert len(set(pos)) == len(pos)


@needs_sklearn
def test_patches_seeded():
    a = datasets.image_patches(8, 200, jax.random.key(5))
    b = datasets.image_patches(8, 200, jax.random.key(5))
    c = datasets.image_patches(8, 200, jax.random.key(6))
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.test, b.test)
    assert not np.array_equal(a.info["test_positions"], c.info["test_positions"])


@needs_sklearn
def test_patches_count_of_ten_thousand():
    ds = datasets.image_patches(8, 10_000, jax.random.key(0))
    assert ds.train.shape[0] + ds.test.shape[0] == 10_000


@needs_sklearn
@pytest.mark.parametrize("kwargs, name", [
    ({"size": 1, "count": 10}, "size"), ({"size": 8, "count": 1}, "count"),
    ({"size": 8.0, "count": 10}, "size"), ({"size": 8, "count": 10, "test_fraction": 1.0},
                                           "test_fraction"),
    ({"size": 8, "count": 10**7}, "count"), ({"size": 8, "count": 10, "colour": "rgb"},
                                             "colour"),
    ({"size": 8, "count": 10, "key": 3}, "key")])
def test_patches_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        datasets.image_patches(**kwargs)


@needs_sklearn
def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.digits(test_fraction=0.0)
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.digits(test_fraction=float("nan"))
    with pytest.raises(ValueError, match="key"):
        datasets.digits(key="seed")


def test_missing_extra_names_it(monkeypatch):
    for mod in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn -> ImportError
    with pytest.raises(ModuleNotFoundError, match=r'pip install "manifold-scores\[data\]"'):
        datasets.digits()
    with pytest.raises(ImportError, match=r"manifold-scores\[data\]"):
        datasets.image_patches(8, 10)


@needs_sklearn
def test_missing_pillow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"manifold-scores\[data\]"):
        datasets.image_patches(8, 10)


@needs_sklearn
def test_loading_never_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access during loading")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert datasets.digits(jax.random.key(2)).train.shape == (1438, 64)
    assert datasets.image_patches(8, 100, jax.random.key(2)).test.shape == (20, 64)


@pytest.mark.parametrize("shape, image_shape", [((50, 3), None), ((40, 5, 6), (5, 6, 1)),
                                                ((30, 4, 4, 3), (4, 4, 3))])
def test_load_array_npy_round_trip(tmp_path, shape, image_shape):
    data = np.random.default_rng(0).normal(size=shape)
    path = tmp_path / "x.npy"
    np.save(path, data)
    ds = datasets.load_array(path, jax.random.key(0))
    n = shape[0]
    assert ds.info["image_shape"] == image_shape and ds.info["shape"] == shape[1:]
    assert ds.train.dtype == np.float64 and ds.test.shape == (round(0.2 * n), ds.train.shape[1])
    flat = data.reshape(n, -1)
    np.testing.assert_array_equal(ds.train, flat[ds.info["train_index"]])
    np.testing.assert_array_equal(ds.test, flat[ds.info["test_index"]])
    assert sorted([*ds.info["train_index"], *ds.info["test_index"]]) == list(range(n))
    again = datasets.load_array(path, jax.random.key(0))
    np.testing.assert_array_equal(again.test, ds.test)


def test_load_array_npz_members_and_integers(tmp_path):
    path = tmp_path / "d.npz"
    imgs = np.arange(20 * 16, dtype=np.uint8).reshape(20, 16)
    np.savez(path, images=imgs, labels=np.arange(20))
    with pytest.raises(ValueError, match="array"):
        datasets.load_array(path)
    ds = datasets.load_array(path, array="images", image_shape=(4, 4, 1), test_fraction=0.25)
    assert ds.train.dtype == np.float32 and ds.test.shape == (5, 16)
    assert ds.info["image_shape"] == (4, 4, 1) and ds.info["name"] == "d.npz:images"
    with pytest.raises(ValueError, match="image_shape"):
        datasets.load_array(path, array="images", image_shape=(4, 4, 2))


def test_load_array_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="path"):
        datasets.load_array(tmp_path / "missing.npy")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        datasets.load_array(nan)
    vec = tmp_path / "vec.npy"
    np.save(vec, np.arange(5.0))
    with pytest.raises(ValueError, match="path"):
        datasets.load_array(vec)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not an array")
    with pytest.raises(ValueError, match="path"):
        datasets.load_array(junk)
