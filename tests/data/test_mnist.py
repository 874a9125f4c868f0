"""MNIST / Fashion-MNIST loading: the shared files, corrupt copies, search order and download."""

from __future__ import annotations

import gzip
import io
import shutil
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest

from tricklab.data import ChecksumError, IDXError, fetch_mnist, load_mnist
from tricklab.data import mnist as mnist_mod
from tricklab.data.__main__ import main as cli_main

TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def idx_bytes(array: np.ndarray) -> bytes:
    a = np.asarray(array, dtype=np.uint8)
    header = (0x0800 | a.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape)
    return header + a.tobytes()


@pytest.fixture(scope="module")
def mnist_test(shared_data):
    return load_mnist("test", root=shared_data)


@pytest.fixture
def test_copy(shared_data, tmp_path, no_default_roots):
    """A root in tmp_path holding copies of the MNIST test gz files."""
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for name in (TEST_IMAGES, TEST_LABELS):
        shutil.copyfile(shared_data / "mnist" / f"{name}.gz", folder / f"{name}.gz")
    return tmp_path / "root"


@pytest.fixture
def raw_copy(shared_data, tmp_path, no_default_roots):
    """A root in tmp_path holding the decompressed MNIST test files."""
    folder = tmp_path / "raw" / "mnist"
    folder.mkdir(parents=True)
    for name in (TEST_IMAGES, TEST_LABELS):
        (folder / name).write_bytes(gzip.decompress((shared_data / "mnist" / f"{name}.gz").read_bytes()))
    return tmp_path / "raw"


@pytest.mark.parametrize("kind, split, n, first", [
    ("mnist", "train", 60000, 5), ("mnist", "test", 10000, 7),
    ("fashion", "train", 60000, 9), ("fashion", "test", 10000, 9),
])
def test_shared_files_load(shared_data, kind, split, n, first):
    X, y = load_mnist(split, root=shared_data, kind=kind)
    assert X.shape == (n, 28, 28) and X.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int64
    assert y[0] == first and y.min() == 0 and y.max() == 9
    counts = np.bincount(y, minlength=10)
    if kind == "fashion":
        assert (counts == n // 10).all()
    elif split == "train":
        assert counts.tolist() == MNIST_TRAIN_COUNTS
    assert X.max() == 255 and X.flags.writeable


def test_search_order_env_and_cache(shared_data, test_copy, mnist_test, monkeypatch, no_default_roots):
    monkeypatch.setenv("TRICKLAB_DATA", str(test_copy))
    X, y = load_mnist("test")
    np.testing.assert_array_equal(y, mnist_test[1])
    monkeypatch.delenv("TRICKLAB_DATA")
    shutil.copytree(test_copy, no_default_roots)
    np.testing.assert_array_equal(load_mnist("test")[0], mnist_test[0])


def test_files_directly_in_root(test_copy, mnist_test):
    for f in (test_copy / "mnist").iterdir():
        f.rename(test_copy / f.name)
    np.testing.assert_array_equal(load_mnist("test", root=test_copy)[1], mnist_test[1])


def test_raw_files_load_same_arrays(raw_copy, mnist_test):
    X, y = load_mnist("test", root=raw_copy)
    np.testing.assert_array_equal(X, mnist_test[0])
    np.testing.assert_array_equal(y, mnist_test[1])


def test_flipped_byte_is_checksum_error(test_copy):
    path = test_copy / "mnist" / f"{TEST_LABELS}.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        load_mnist("test", root=test_copy)
    expected = mnist_mod.SHA256["mnist"][f"{TEST_LABELS}.gz"]
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert str(path) in message and expected in message and err.value.actual in message
    assert err.value.actual != expected


def test_truncated_gzip_names_file(test_copy):
    path = test_copy / "mnist" / f"{TEST_IMAGES}.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(ChecksumError, match=str(path)):
        load_mnist("test", root=test_copy)
    with pytest.raises(IDXError, match=str(path)):
        load_mnist("test", root=test_copy, verify=False)


def test_wrong_magic_number(raw_copy):
    path = raw_copy / "mnist" / TEST_LABELS
    data = bytearray(path.read_bytes())
    data[3] = 3
    path.write_bytes(bytes(data))
    with pytest.raises(IDXError, match="magic number 0x00000803") as err:
        load_mnist("test", root=raw_copy)
    assert str(path) in str(err.value)


def test_regzipped_wrong_magic_fails_checksum_then_magic(raw_copy, test_copy):
    path = test_copy / "mnist" / f"{TEST_LABELS}.gz"
    data = bytearray((raw_copy / "mnist" / TEST_LABELS).read_bytes())
    data[2] = 0x0D  # float type code
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(ChecksumError):
        load_mnist("test", root=test_copy)
    with pytest.raises(IDXError, match="magic"):
        load_mnist("test", root=test_copy, verify=False)


def test_size_not_matching_header(raw_copy):
    path = raw_copy / "mnist" / TEST_IMAGES
    path.write_bytes(path.read_bytes() + b"\0" * 7)
    with pytest.raises(IDXError, match="header says shape") as err:
        load_mnist("test", root=raw_copy)
    assert str(path) in str(err.value)


def test_wrong_dims_and_counts(tmp_path, no_default_roots):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / TEST_IMAGES).write_bytes(idx_bytes(np.zeros((5, 28, 27))))
    (folder / TEST_LABELS).write_bytes(idx_bytes(np.zeros(5)))
    with pytest.raises(IDXError, match=r"images of shape \(28, 27\)"):
        load_mnist("test", root=tmp_path, verify=False)
    (folder / TEST_IMAGES).write_bytes(idx_bytes(np.zeros((5, 28, 28))))
    (folder / TEST_LABELS).write_bytes(idx_bytes(np.zeros(4)))
    with pytest.raises(IDXError, match="5 images but .* 4 labels") as err:
        load_mnist("test", root=tmp_path, verify=False)
    assert TEST_IMAGES in str(err.value) and TEST_LABELS in str(err.value)
    (folder / TEST_LABELS).write_bytes(idx_bytes(np.arange(5)))
    X, y = load_mnist("test", root=tmp_path, verify=False)
    assert X.shape == (5, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(IDXError, match="has 10000"):  # raw files: verify checks the standard count
        load_mnist("test", root=tmp_path)


def test_missing_files_names_every_searched_root_in_one_line(tmp_path, monkeypatch, no_default_roots):
    monkeypatch.setenv("TRICKLAB_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        load_mnist("train", root=tmp_path / "arg", kind="fashion")
    message = str(err.value)
    assert "\n" not in message
    searched = f"{tmp_path / 'arg'}, {tmp_path / 'env'}, {no_default_roots} (each searched as ROOT/fashion-mnist/ and ROOT/)"
    assert searched in message
    assert "train-images-idx3-ubyte, train-labels-idx1-ubyte" in message
    for way in ("download=True", "$TRICKLAB_DATA", "data.root", "`tricklab data fetch fashion`"):
        assert way in message


def test_search_finds_shared_data_beside_the_checkout_as_the_tests_do(monkeypatch, tmp_path):
    from tests.conftest import find_shared_data

    monkeypatch.delenv("TRICKLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    beside = find_shared_data()
    assert mnist_mod.checkout_data_root() == beside
    expected = ([beside] if beside is not None else []) + [tmp_path / "cache" / "tricklab"]
    assert mnist_mod.search_roots() == expected
    assert mnist_mod.search_roots(tmp_path / "arg") == [tmp_path / "arg", *expected]


def test_checkout_data_root_is_the_nearest_shared_data_above_the_package(tmp_path, monkeypatch):
    package = tmp_path / "a" / "checkout" / "tricklab" / "data"
    package.mkdir(parents=True)
    (tmp_path / "a" / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(mnist_mod, "__file__", str(package / "mnist.py"))
    assert mnist_mod.checkout_data_root() == tmp_path / "a" / "shared" / "data"


def test_downloads_never_go_beside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("TRICKLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_mod, "checkout_data_root", lambda: tmp_path / "shared" / "data")
    assert mnist_mod.download_root() == tmp_path / "cache" / "tricklab"
    monkeypatch.setenv("TRICKLAB_DATA", str(tmp_path / "env"))
    assert mnist_mod.download_root() == tmp_path / "env"
    assert mnist_mod.download_root(tmp_path / "arg") == tmp_path / "arg"


def test_label_outside_0_to_9_names_the_labels_file(raw_copy):
    path = raw_copy / "mnist" / TEST_LABELS
    data = bytearray(path.read_bytes())
    data[8 + 17] = 42
    path.write_bytes(bytes(data))
    with pytest.raises(IDXError, match="label 42 at index 17 is outside 0..9") as err:
        load_mnist("test", root=raw_copy)
    assert str(path) in str(err.value)


def test_errors_are_tricklab_errors():
    from tricklab.errors import TricklabError

    assert issubclass(ChecksumError, TricklabError) and issubclass(ChecksumError, ValueError)
    assert issubclass(IDXError, TricklabError) and issubclass(IDXError, ValueError)
    assert issubclass(mnist_mod.FetchError, TricklabError) and issubclass(mnist_mod.FetchError, OSError)


def _unreachable(url):
    raise urllib.error.URLError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))


def test_fetch_without_network_is_one_line_naming_every_host(tmp_path):
    mirrors = ["https://a.example.org/mnist/", "http://b.example.net/"]
    with pytest.raises(mnist_mod.FetchError) as err:
        fetch_mnist("mnist", tmp_path, mirrors=mirrors, opener=_unreachable)
    message = str(err.value)
    assert "\n" not in message and "no network" in message and str(tmp_path / "mnist") in message
    assert "a.example.org (Temporary failure in name resolution)" in message
    assert "b.example.net (Temporary failure in name resolution)" in message
    assert list((tmp_path / "mnist").iterdir()) == []


def test_fetch_http_error_is_not_called_no_network(tmp_path):
    def not_found(url):
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    with pytest.raises(mnist_mod.FetchError) as err:
        fetch_mnist("mnist", tmp_path, mirrors=["https://a.example.org/"], opener=not_found)
    assert "no network" not in str(err.value) and "a.example.org (HTTP Error 404: Not Found)" in str(err.value)


def test_fetch_uses_urlopen_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _unreachable)
    with pytest.raises(mnist_mod.FetchError, match="no network"):
        fetch_mnist("mnist", tmp_path, mirrors=["https://a.example.org/"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        load_mnist(kind="kmnist")
    with pytest.raises(ValueError, match="split"):
        load_mnist("val")


def test_fetch_from_file_mirror_then_load(shared_data, tmp_path, no_default_roots):
    mirrors = [(tmp_path / "empty").as_uri(), (shared_data / "mnist").as_uri()]
    folder = fetch_mnist("mnist", tmp_path / "dl", mirrors=mirrors)
    assert sorted(p.name for p in folder.iterdir()) == sorted(mnist_mod.SHA256["mnist"])
    X, y = load_mnist("test", root=tmp_path / "dl")
    assert X.shape == (10000, 28, 28) and y[0] == 7

    def refuse(url):
        raise AssertionError(f"verified files must not be fetched again ({url})")
    fetch_mnist("mnist", tmp_path / "dl", opener=refuse)


def test_load_with_download_uses_first_root(shared_data, tmp_path, monkeypatch, no_default_roots):
    monkeypatch.setitem(mnist_mod.MIRRORS, "mnist", ((shared_data / "mnist").as_uri(),))
    y = load_mnist("test", root=tmp_path / "r", download=True)[1]
    assert y[0] == 7 and (tmp_path / "r" / "mnist" / f"{TEST_LABELS}.gz").is_file()


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    dest = tmp_path / "d" / "file.gz"
    with pytest.raises(ChecksumError, match="fake://x") as err:
        mnist_mod.download_file("fake://x", dest, "0" * 64, opener=lambda url: io.BytesIO(b"junk"))
    assert "0" * 64 in str(err.value)
    assert list(dest.parent.iterdir()) == []


def test_download_interrupted_leaves_nothing(tmp_path):
    class Broken(io.BytesIO):
        def read(self, n=-1):
            if self.tell():
                raise ConnectionResetError("connection dropped")
            return super().read(10)

    dest = tmp_path / "file.gz"
    with pytest.raises(ConnectionResetError):
        mnist_mod.download_file("fake://x", dest, "0" * 64, opener=lambda url: Broken(b"x" * 100))
    assert list(tmp_path.iterdir()) == []


def test_fetch_all_mirrors_bad_raises_checksum_error(tmp_path, shared_data):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in mnist_mod.SHA256["mnist"]:
        (bad / name).write_bytes(b"not the file")
    with pytest.raises(ChecksumError):
        fetch_mnist("mnist", tmp_path / "dl", mirrors=[bad.as_uri()])
    assert list((tmp_path / "dl" / "mnist").iterdir()) == []


def test_cli_fetch(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(mnist_mod.MIRRORS, "fashion", ((shared_data / "fashion-mnist").as_uri(),))
    assert cli_main(["fetch", "fashion", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert str(tmp_path / "fashion-mnist") in capsys.readouterr().out
