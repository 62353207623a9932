"""The official-format loader, the download path (a local file, no network), augmentation, errors."""

import pickle

import numpy as np
import pytest
import torch

from suite import data
from suite.errors import UserError


@pytest.mark.parametrize("bytes_keys", [False, True])
@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_loader_reads_official_format(tmp_path, name, classes, bytes_keys):
    data.write_synthetic(tmp_path, name, num_train=250, num_test=60, seed=1, bytes_keys=bytes_keys)
    train, test = data.load_dataset(name, tmp_path, download=False)
    assert train.images.shape == (250, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (60, 3, 32, 32)
    assert train.labels.dtype == torch.int64 and 0 <= train.labels.min() and train.labels.max() < classes


def test_loader_matches_the_official_pixel_layout(tmp_path):
    """data rows are R plane, then G, then B, each row-major: pixel (c, y, x) is column c*1024 + y*32 + x."""
    folder = data.write_synthetic(tmp_path, num_train=10, num_test=10)
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f)
    train, _ = data.load_dataset("cifar10", tmp_path, download=False)
    row = raw["data"][0]
    assert train.images[0, 1, 5, 7] == row[1 * 1024 + 5 * 32 + 7]
    assert train.labels[0] == raw["labels"][0]


def test_data_dir_may_be_the_official_folder_itself_or_come_from_env(tmp_path, monkeypatch):
    folder = data.write_synthetic(tmp_path, num_train=20, num_test=10)
    train, _ = data.load_dataset("cifar10", folder, download=False)
    assert len(train) == 20
    monkeypatch.setenv("Q4BENCH_DATA", str(tmp_path))
    train, _ = data.load_dataset("cifar10", None, download=False)
    assert len(train) == 20


def test_download_verifies_checksum_and_unpacks(tmp_path):
    archive, md5 = data.synthetic_archive(tmp_path / "mirror", num_train=40, num_test=20)
    root = tmp_path / "data"
    train, test = data.load_dataset("cifar10", root, url=archive.as_uri(), md5=md5)
    assert len(train) == 40 and len(test) == 20
    assert (root / "cifar-10-batches-py" / "test_batch").exists()
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-py"]  # no temporary leftovers


def test_official_urls_and_checksums_are_kept():
    assert data.DATASETS["cifar10"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert data.DATASETS["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert data.DATASETS["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"


def test_checksum_mismatch_is_one_line_and_leaves_nothing(tmp_path):
    archive, _ = data.synthetic_archive(tmp_path / "mirror", num_train=10, num_test=10)
    root = tmp_path / "data"
    with pytest.raises(UserError, match="checksum mismatch") as err:
        data.load_dataset("cifar10", root, url=archive.as_uri(), md5="0" * 32)
    assert "\n" not in str(err.value)
    assert not (root / "cifar-10-batches-py").exists()
    assert list(root.iterdir()) == []


def test_missing_folder_and_no_network(tmp_path):
    # Port 9 on loopback refuses at once: the same path as a machine without network.
    with pytest.raises(UserError, match="not found and download from .* failed") as err:
        data.load_dataset("cifar10", tmp_path / "nowhere", url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    assert "\n" not in str(err.value)


def test_missing_folder_without_download(tmp_path):
    with pytest.raises(UserError, match="not found"):
        data.load_dataset("cifar10", tmp_path, download=False)


def test_truncated_batch_file(tmp_path):
    folder = data.write_synthetic(tmp_path, num_train=50, num_test=10)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="data_batch_3: truncated or corrupt") as err:
        data.load_dataset("cifar10", tmp_path, download=False)
    assert "\n" not in str(err.value)


def test_garbage_batch_file(tmp_path):
    folder = data.write_synthetic(tmp_path, num_train=50, num_test=10)
    (folder / "test_batch").write_bytes(b"\x00not a pickle at all")
    with pytest.raises(UserError, match="test_batch: truncated or corrupt"):
        data.load_dataset("cifar10", tmp_path, download=False)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    folder = data.write_synthetic(tmp_path, num_train=50, num_test=10)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        data.load_dataset("cifar10", tmp_path, download=False)


def test_wrong_class_count(tmp_path):
    # CIFAR-100-like labels (up to 99) in a folder read as CIFAR-10
    folder = data.write_synthetic(tmp_path, num_train=20, num_test=10)
    (folder / "data_batch_2").write_bytes(
        pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 42]})
    )
    with pytest.raises(UserError, match="data_batch_2: wrong class count: labels span 0..42"):
        data.load_dataset("cifar10", tmp_path, download=False)


def test_wrong_class_count_in_meta(tmp_path):
    folder = data.write_synthetic(tmp_path, num_train=20, num_test=10)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(100)]}))
    with pytest.raises(UserError, match="wrong class count: label_names lists 100"):
        data.load_dataset("cifar10", tmp_path, download=False)


def test_augmentation_shapes_ranges_and_crop_content():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = data.augment(images, g)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(64):
        src, dst = images[i], out[i]
        # each output is a shifted (possibly flipped) window: its non-zero part is a sub-block of the source
        hit = False
        for flip in (False, True):
            s = src.flip(2) if flip else src
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    padded = torch.nn.functional.pad(s, (4, 4, 4, 4))
                    window = padded[:, 4 + dy : 36 + dy, 4 + dx : 36 + dx]
                    if torch.equal(window, dst):
                        hit = True
        assert hit, i
    # with 64 images, some are shifted (zero padding visible) and some are flipped
    assert (out == 0).any()


def test_normalize_uses_the_papers_mean_and_std():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = data.normalize(x)
    expected = [(1 - m) / s for m, s in zip(data.MEAN, data.STD)]
    assert torch.allclose(y[0, :, 0, 0], torch.tensor(expected))
    assert y.dtype == torch.float32


def test_batches_cover_the_split_once():
    split = data.Split(torch.zeros(300, 3, 32, 32, dtype=torch.uint8), torch.arange(300))
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([y for _, y in data.batches(split, 128, g, train=True)])
    assert sorted(seen.tolist()) == list(range(300))
    assert data.num_train_batches(300, 128) == 3
    assert data.num_train_batches(257, 128) == 2  # a 1-image tail batch is dropped (BatchNorm)
    assert [len(y) for _, y in data.batches(split, 100)] == [100, 100, 100]
