"""Datasets (registry, loading, resize, errors) and the private/auxiliary/evaluation
splits. Real datasets come from the shared data folder next to the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

import simulator.data as data_pkg
from simulator.data import (
    DATASETS,
    DatasetNotFoundError,
    ImageData,
    make_splits,
    resize_images,
    stratified_order,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "MNIST").is_dir(),
                                  reason=f"shared data folder not found at {SHARED}")


def _load(name: str, split: str = "train", **params) -> ImageData | None:
    return DATASETS.create(name, params).load(split)


def _check_images(d: ImageData, n: int, shape: tuple[int, int, int], k: int) -> None:
    assert len(d) == n and d.image_shape == shape and d.num_classes == k
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert 0.0 <= float(d.x.min()) and float(d.x.max()) <= 1.0
    assert float(d.x.max()) > 0.5  # really scaled to [0, 1], not [0, 1/255]
    assert int(d.y.min()) >= 0 and int(d.y.max()) < k


@pytest.fixture(scope="module")
def mnist_train() -> ImageData:
    if not (SHARED / "MNIST").is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    return _load("mnist", root=str(SHARED))


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return _load("digits")


# -- registry and public API ----------------------------------------------------------
def test_public_api_names_resolve() -> None:
    for name in data_pkg.__all__:
        assert getattr(data_pkg, name) is not None


def test_registry_lists_every_dataset() -> None:
    assert set(DATASETS.names()) >= {"digits", "mnist", "fashion_mnist", "cifar10",
                                     "att_faces", "image_folder", "npz", "synthetic"}


@pytest.mark.parametrize("bad", [{"image_size": 4}, {"mean": (0.5,), "std": (0.0,)},
                                 {"mean": (0.5, 0.5), "std": (0.2,)}, {"mean": (0.5,)},
                                 {"roots": "/tmp"}])
def test_params_reject_bad_values(bad: dict) -> None:
    with pytest.raises(ValidationError):
        DATASETS.get("digits").Params.model_validate(bad)


# -- loading --------------------------------------------------------------------------
def test_digits_loads_offline(digits: ImageData) -> None:
    _check_images(digits, 1797, (1, 8, 8), 10)
    assert float(digits.x.max()) == 1.0  # 16 -> 1.0
    assert _load("digits", "test") is None
    assert DATASETS.create("digits").normalization() == ((0.3053,), (0.3760,))


@needs_shared
def test_mnist(mnist_train: ImageData) -> None:
    _check_images(mnist_train, 60000, (1, 28, 28), 10)
    hist = torch.bincount(mnist_train.y, minlength=10).tolist()
    assert hist == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert len(_load("mnist", "test", root=str(SHARED))) == 10000


@needs_shared
def test_fashion_mnist_test_split() -> None:
    d = _load("fashion_mnist", "test", root=str(SHARED))
    _check_images(d, 10000, (1, 28, 28), 10)
    assert torch.bincount(d.y).tolist() == [1000] * 10
    assert d.classes is not None and d.classes[9] == "Ankle boot"


@needs_shared
def test_cifar10_from_npz() -> None:
    train = _load("cifar10", root=str(SHARED))
    test = _load("cifar10", "test", root=str(SHARED))
    _check_images(train, 2000, (3, 32, 32), 10)
    _check_images(test, 10000, (3, 32, 32), 10)
    assert torch.bincount(test.y).tolist() == [1000] * 10
    raw = np.load(SHARED / "CIFAR10" / "cifar10_train_first2000_exact.npz")["x"][7]
    assert torch.equal(train.x[7], torch.from_numpy(raw).permute(2, 0, 1) / 255.0)


@needs_shared
def test_att_faces_labels_follow_identity_number() -> None:
    d = _load("att_faces", root=str(SHARED))
    _check_images(d, 400, (1, 112, 92), 40)
    assert torch.bincount(d.y).tolist() == [10] * 40
    assert _load("att_faces", "test", root=str(SHARED)) is None
    # s10 is identity 10 -> label 9, although "s10" sorts before "s2" as text.
    first_of_s10 = int(np.flatnonzero(d.y.numpy() == 9)[0])
    pgm = np.array(Image.open(SHARED / "att_faces" / "s10" / "1.pgm"))
    assert torch.equal(d.x[first_of_s10, 0], torch.from_numpy(pgm) / 255.0)


def test_resize_changes_size_and_keeps_range(digits: ImageData) -> None:
    up = _load("digits", image_size=16)
    _check_images(up, 1797, (1, 16, 16), 10)
    assert torch.equal(up.y, digits.y)
    assert abs(float(up.x.mean()) - float(digits.x.mean())) < 0.02
    assert resize_images(digits.x, 8) is digits.x  # native size: untouched


@needs_shared
def test_resize_down_is_antialiased() -> None:
    d = _load("att_faces", root=str(SHARED), image_size=16)
    assert d.image_shape == (1, 16, 16)
    # Antialiasing averages: the mean brightness survives an 7x reduction.
    assert abs(float(d.x.mean()) - 0.4417) < 0.01


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "att_faces"])
def test_missing_files_error_says_where_and_how(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        _load(name, root=str(tmp_path))
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert repr(name) in msg and str(tmp_path) in msg and "`root`" in msg
    if name == "att_faces":
        assert "cannot be downloaded" in msg
    else:
        assert "`download: true`" in msg


def test_normalization_params_override_and_channel_check() -> None:
    ds = DATASETS.create("digits", {"mean": (0.1,), "std": (0.2,)})
    assert ds.normalization() == ((0.1,), (0.2,))
    with pytest.raises(ValueError, match="3 values but the images have 1 channels"):
        DATASETS.create("digits", {"mean": (0.1,) * 3, "std": (0.2,) * 3}).load("train")


def test_synthetic_is_deterministic_balanced_and_learnable() -> None:
    params = {"num_samples": 400, "num_classes": 4, "size": 12, "channels": 3}
    train, test = (_load("synthetic", s, **params) for s in ("train", "test"))
    _check_images(train, 400, (3, 12, 12), 4)
    _check_images(test, 100, (3, 12, 12), 4)
    assert torch.bincount(train.y).tolist() == [100] * 4
    assert torch.equal(train.x, _load("synthetic", **params).x)
    assert not torch.equal(train.x[:100], test.x)
    assert not torch.equal(train.x, _load("synthetic", **params, seed=1).x)
    centroids = torch.stack([train.x[train.y == k].mean(0) for k in range(4)])
    pred = torch.cdist(test.x.flatten(1), centroids.flatten(1)).argmin(1)
    assert (pred == test.y).float().mean() > 0.9


def test_npz_accepts_nhwc_uint8_and_nchw_float(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 10, 9, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(6) % 3)
    np.savez(tmp_path / "b.npz", img=x.transpose(0, 3, 1, 2) / 255.0,
             lab=np.arange(6) % 3)
    a = _load("npz", path=str(tmp_path / "a.npz"))
    b = _load("npz", root=str(tmp_path), path="b.npz", x_key="img", y_key="lab")
    _check_images(a, 6, (3, 10, 9), 3)
    assert torch.allclose(a.x, b.x) and torch.equal(a.y, b.y)
    assert DATASETS.create("npz", {"path": str(tmp_path / "a.npz")}).normalization() \
        == ((0.5,) * 3, (0.5,) * 3)
    np.savez(tmp_path / "c.npz", x=x * 2.0, y=np.arange(6))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        _load("npz", path=str(tmp_path / "c.npz"))
    with pytest.raises(DatasetNotFoundError, match="nope.npz"):
        _load("npz", path=str(tmp_path / "nope.npz"))


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, sizes in (("cat", [(10, 12), (10, 12)]), ("dog", [(10, 12), (20, 24)])):
        (tmp_path / cls).mkdir()
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png")
    with pytest.raises(ValueError, match="set image_size"):
        _load("image_folder", path=str(tmp_path))
    d = _load("image_folder", path=str(tmp_path), image_size=8, channels=1)
    _check_images(d, 4, (1, 8, 8), 2)
    assert d.y.tolist() == [0, 0, 1, 1] and d.classes == ("cat", "dog")
    assert _load("image_folder", "test", path=str(tmp_path), image_size=8) is None


# -- ImageData ------------------------------------------------------------------------
def test_image_data_subset_composes_index(digits: ImageData) -> None:
    a = digits.subset(np.arange(100, 200))
    b = a.subset([5, 7])
    assert b.index.tolist() == [105, 107]
    assert torch.equal(b.x, digits.x[[105, 107]])
    with pytest.raises(IndexError):
        a.subset([100])
    with pytest.raises(TypeError, match="float32"):
        ImageData(x=digits.x.double(), y=digits.y, num_classes=10, name="d")


# -- splits ---------------------------------------------------------------------------
def test_splits_from_train_only_are_disjoint_stratified_deterministic(
        digits: ImageData) -> None:
    s = make_splits(digits, None, auxiliary=0.2, evaluation=300, seed=3)
    assert s.sizes() == {"private": 1797 - 359 - 300, "auxiliary": 359,
                         "evaluation": 300}
    sets = [set(part.index.tolist()) for part in (s.private, s.auxiliary, s.evaluation)]
    assert sum(map(len, sets)) == 1797 and len(set.union(*sets)) == 1797
    for part in (s.private, s.auxiliary, s.evaluation):
        assert torch.equal(part.x, digits.x[torch.from_numpy(part.index)])
        expected = torch.bincount(digits.y, minlength=10) * len(part) / len(digits)
        assert (torch.bincount(part.y, minlength=10) - expected).abs().max() <= 2
    again = make_splits(digits, None, auxiliary=0.2, evaluation=300, seed=3)
    assert np.array_equal(again.auxiliary.index, s.auxiliary.index)
    other = make_splits(digits, None, auxiliary=0.2, evaluation=300, seed=4)
    assert not np.array_equal(other.auxiliary.index, s.auxiliary.index)


def test_splits_take_evaluation_from_test_capped(digits: ImageData) -> None:
    train, test = digits.subset(np.arange(1000)), digits.subset(np.arange(1000, 1797))
    test = ImageData(test.x, test.y, 10, "digits", split="test")
    s = make_splits(train, test, auxiliary=100, evaluation=5000, seed=0)
    assert len(s.evaluation) == len(test) and s.evaluation.split == "test"
    assert len(s.private) == 900 and len(s.auxiliary) == 100
    s = make_splits(train, test, auxiliary=0, evaluation=0.5, seed=0)
    assert len(s.evaluation) == round(0.5 * len(test)) and len(s.private) == 1000


@pytest.mark.parametrize("kwargs, field", [
    ({"auxiliary": 1797, "evaluation": 0}, "auxiliary"),
    ({"auxiliary": 0.5, "evaluation": 0.6}, "auxiliary"),
    ({"auxiliary": 1.5, "evaluation": 10}, "auxiliary"),
    ({"auxiliary": 10, "evaluation": -1}, "evaluation"),
])
def test_splits_reject_sizes_that_do_not_fit(digits: ImageData, kwargs: dict,
                                            field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make_splits(digits, None, seed=0, **kwargs)


def test_stratified_order_prefixes_are_proportional() -> None:
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    order = stratified_order(labels, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(1000))
    for n in (10, 55, 500):
        counts = np.bincount(labels[order[:n]], minlength=3)
        assert np.abs(counts - n * np.array([0.6, 0.3, 0.1])).max() <= 1


def test_splits_allow_an_empty_evaluation_set(digits: ImageData) -> None:
    s = make_splits(digits, None, auxiliary=10, evaluation=0, seed=0)
    assert len(s.evaluation) == 0 and len(s.private) == 1787
