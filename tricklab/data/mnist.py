"""MNIST and Fashion-MNIST from the original IDX files (gzip or raw).

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian header

    magic = 0x00 0x00 <type code> <ndim>      (type code 0x08 = unsigned byte)
    dims  = ndim big-endian uint32 sizes       (images: N, 28, 28; labels: N)
    data  = prod(dims) bytes, row-major

Files are found under ``<root>/mnist/<name>`` or ``<root>/fashion-mnist/<name>`` (or directly in
``<root>``) for each root in the search order: the ``root`` argument, ``$TRICKLAB_DATA``, the first
``shared/data`` folder above the package (beside a checkout, where the tests find the files too),
then the user cache ``$XDG_CACHE_HOME/tricklab`` (default ``~/.cache/tricklab``). Downloads go to
the ``root`` argument, else ``$TRICKLAB_DATA``, else the user cache (never into ``shared/data``).

References:
    LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to document
    recognition". Xiao, Rasul & Vollgraf (2017), "Fashion-MNIST: a novel image dataset for
    benchmarking machine learning algorithms", arXiv:1708.07747.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import secrets
import socket
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import TricklabError
from ..fileio import fsync_dir

KINDS = {"mnist": "mnist", "fashion": "fashion-mnist"}
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

# Published SHA-256 digests of the gzip files (they also match the published MD5s).
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

_CHUNK = 1 << 20


class ChecksumError(TricklabError, ValueError):
    """A file's SHA-256 digest differs from the published one."""

    def __init__(self, path: Path | str, expected: str, actual: str):
        self.path, self.expected, self.actual = str(path), expected, actual
        super().__init__(f"{path}: SHA-256 mismatch: expected {expected}, got {actual}; "
                         "the file is corrupt or not the published one (delete it and fetch again)")


class IDXError(TricklabError, ValueError):
    """A file is not a well-formed IDX file of the expected shape."""


class FetchError(TricklabError, OSError):
    """No mirror could serve a file: no network, a host that cannot be reached, an HTTP error."""


def _check_kind_split(kind: str, split: str | None = None) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")


def cache_dir() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/tricklab``, else ``~/.cache/tricklab``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tricklab"


def checkout_data_root() -> Path | None:
    """The first ``shared/data`` folder above this package (as tests/conftest.py looks), or None."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


def download_root(root: str | os.PathLike | None = None) -> Path:
    """Where fetched files go: ``root``, else ``$TRICKLAB_DATA``, else :func:`cache_dir`."""
    if root is not None:
        return Path(root)
    if os.environ.get("TRICKLAB_DATA"):
        return Path(os.environ["TRICKLAB_DATA"])
    return cache_dir()


def search_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """Roots searched in order: ``root``, ``$TRICKLAB_DATA``, :func:`checkout_data_root`, then
    :func:`cache_dir`."""
    roots = [Path(root)] if root is not None else []
    if os.environ.get("TRICKLAB_DATA"):
        roots.append(Path(os.environ["TRICKLAB_DATA"]))
    beside = checkout_data_root()
    if beside is not None:
        roots.append(beside)
    roots.append(cache_dir())
    return roots


def candidate_paths(name: str, kind: str, roots: Iterable[Path]) -> list[Path]:
    """Every path where IDX file ``name`` (without ``.gz``) may lie, in search order."""
    paths = []
    for r in roots:
        for folder in (r / KINDS[kind], r):
            paths += [folder / f"{name}.gz", folder / name]
    return paths


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path | str, kind: str) -> None:
    """Raise :class:`ChecksumError` unless gzip file ``path`` has its published SHA-256."""
    expected = SHA256[kind][Path(path).name]
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(path, expected, actual)


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise IDXError(f"{path}: truncated or corrupt gzip data ({e})") from e


def parse_idx(buf: bytes, ndim: int, path: Path | str = "<bytes>") -> np.ndarray:
    """Parse an unsigned-byte IDX buffer of ``ndim`` dimensions into a uint8 array.

    Checks the magic number ``0x0000 08 <ndim>`` and that the payload holds exactly
    ``prod(dims)`` bytes; ``path`` only names the source in errors.
    """
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise IDXError(f"{path}: {len(buf)} bytes is shorter than the {header}-byte IDX header")
    magic = int.from_bytes(buf[:4], "big")
    if magic != 0x0800 | ndim:
        raise IDXError(f"{path}: magic number {magic:#010x}, expected {0x0800 | ndim:#010x} "
                       f"(unsigned byte, {ndim} dimension(s)); not an IDX file of this kind")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims)
    if len(buf) - header != expected:
        raise IDXError(f"{path}: header says shape {dims} = {expected} bytes of data, "
                       f"file holds {len(buf) - header}")
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx(path: Path | str, ndim: int, kind: str | None = None, verify: bool = True) -> np.ndarray:
    """Read IDX file ``path`` (gzip if it ends in ``.gz``, else raw), verifying gzip files.

    Checksum verification applies to ``.gz`` files only (``kind`` names the digest table); no
    digest is published for the uncompressed files, so raw files are checked for structure.
    """
    path = Path(path)
    if verify and kind is not None and path.suffix == ".gz":
        verify_file(path, kind)
    return parse_idx(_read_bytes(path), ndim, path)


def _find(name: str, kind: str, roots: list[Path]) -> Path | None:
    return next((p for p in candidate_paths(name, kind, roots) if p.is_file()), None)


def _missing_error(names: list[str], kind: str, roots: list[Path]) -> FileNotFoundError:
    """One line: the files, every root searched (each as ROOT/<kind folder>/ and ROOT/) and the ways out."""
    searched = ", ".join(str(r) for r in roots)
    return FileNotFoundError(
        f"{kind} files {', '.join(names)} (.gz or raw) not found under {searched} "
        f"(each searched as ROOT/{KINDS[kind]}/ and ROOT/); get them with `tricklab data fetch {kind}` "
        f"(or load_mnist(..., download=True)), or point the config key data.root (root= in Python) or "
        f"$TRICKLAB_DATA at a folder holding {KINDS[kind]}/<name>.gz")


def _check_labels(images: np.ndarray, labels: np.ndarray, paths: tuple[Path, Path]) -> None:
    if images.shape[1:] != IMAGE_SHAPE:
        raise IDXError(f"{paths[0]}: images of shape {images.shape[1:]}, expected {IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise IDXError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds "
                       f"{len(labels)} labels")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise IDXError(f"{paths[1]}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{NUM_CLASSES - 1} "
                       f"({bad.size} such label(s)); not a labels file of this data set")


def load_mnist(split: str = "train", root: str | os.PathLike | None = None, kind: str = "mnist",
               download: bool = False, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST.

    Args:
        split: ``"train"`` (60,000 examples) or ``"test"`` (10,000).
        root: searched first, before ``$TRICKLAB_DATA``, ``shared/data`` beside the checkout and
            the user cache.
        kind: ``"mnist"`` or ``"fashion"``.
        download: fetch the four files into :func:`download_root` if they are missing.
        verify: check ``.gz`` files against the published SHA-256 digests. Raw (uncompressed)
            files have no published digest: for them ``verify`` checks the structure (magic
            number, dims, size) and the standard example count instead.

    Returns:
        ``X`` uint8 ndarray of shape (N, 28, 28) and ``y`` int64 ndarray of shape (N,).

    Raises:
        FileNotFoundError naming every root searched; :class:`ChecksumError` (a ValueError)
        naming the file and both digests; :class:`IDXError` (a ValueError) naming the file for a
        corrupt gzip, wrong magic number, wrong dims, size not matching the header, or
        mismatched image and label counts.
    """
    _check_kind_split(kind, split)
    image_name, label_name, n_expected = SPLITS[split]
    roots = search_roots(root)
    paths = [_find(n, kind, roots) for n in (image_name, label_name)]
    if None in paths and download:
        fetch_mnist(kind, root)
        paths = [_find(n, kind, roots) for n in (image_name, label_name)]
    if None in paths:
        raise _missing_error([image_name, label_name], kind, roots)
    images = read_idx(paths[0], 3, kind, verify)
    labels = read_idx(paths[1], 1, kind, verify)
    _check_labels(images, labels, (paths[0], paths[1]))
    if verify and len(images) != n_expected:
        raise IDXError(f"{paths[0]}: {len(images)} examples, the {kind} {split} split has "
                       f"{n_expected}")
    return images, labels.astype(np.int64)


def download_file(url: str, dest: Path | str, sha256: str,
                  opener: Callable[[str], object] | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its SHA-256.

    The bytes go to a temporary file in ``dest``'s folder, which is fsynced and renamed onto
    ``dest`` (``os.replace``) only if the digest matches; on any failure it is removed, so
    ``dest`` is either absent or complete. ``opener`` defaults to ``urllib.request.urlopen``.
    """
    opener = opener or urllib.request.urlopen
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; os.open applies the umask as usual.
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(8)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, opener(url) as response:
            while block := response.read(_CHUNK):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise ChecksumError(url, sha256, h.hexdigest())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    return dest


def fetch_mnist(kind: str = "mnist", root: str | os.PathLike | None = None,
                mirrors: Iterable[str] | None = None,
                opener: Callable[[str], object] | None = None) -> Path:
    """Download the four gzip files of ``kind`` into ``<root>/<kind folder>/``, verified.

    ``root`` defaults to :func:`download_root` (``$TRICKLAB_DATA`` if set, else the user cache).
    Files already present with the right digest are kept. Each file is tried on every mirror in
    turn. If none serves it: the :class:`ChecksumError` when a mirror served wrong bytes, else a
    one-line :class:`FetchError` naming every host and its error ("no network" when none could be
    reached at all).

    Returns:
        The folder holding the files.
    """
    _check_kind_split(kind)
    folder = download_root(root) / KINDS[kind]
    mirrors = tuple(mirrors) if mirrors is not None else MIRRORS[kind]
    for name, digest in SHA256[kind].items():
        dest = folder / name
        if dest.is_file() and sha256_file(dest) == digest:
            continue
        _fetch_one(name, dest, digest, mirrors, opener)
    return folder


def _fetch_one(name: str, dest: Path, digest: str, mirrors: tuple[str, ...],
               opener: Callable[[str], object] | None) -> None:
    if not mirrors:
        raise ValueError("mirrors is empty; give at least one base URL")
    errors = []
    for base in mirrors:
        try:
            download_file(base.rstrip("/") + "/" + name, dest, digest, opener)
            return
        except (OSError, ValueError) as e:
            errors.append(e)
    tried = ", ".join(f"{_host(m)} ({_reason(e)})" for m, e in zip(mirrors, errors))
    bad_bytes = [e for e in errors if isinstance(e, ChecksumError)]
    if bad_bytes:
        bad_bytes[-1].add_note(f"could not fetch {name} from any mirror: {tried}")
        raise bad_bytes[-1]
    if all(_unreachable(m, e) for m, e in zip(mirrors, errors)):
        raise FetchError(f"cannot download {name} into {dest.parent}: no network, or no connection to "
                         f"{tried}; connect to the network, or copy the files into {dest.parent} from a "
                         "machine that has one") from errors[-1]
    raise FetchError(f"cannot download {name} into {dest.parent}: {tried}") from errors[-1]


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or url


def _reason(exc: Exception) -> str:
    """The innermost cause in words: the resolver's or socket's message rather than URLError's wrapper."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        return getattr(reason, "strerror", None) or str(reason)
    return getattr(exc, "strerror", None) or str(exc)


def _unreachable(url: str, exc: Exception) -> bool:
    """The host could not be reached at all (no name resolution, no connection, a timeout)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return False
    if isinstance(exc, urllib.error.HTTPError):
        return False
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason
    return isinstance(exc, (socket.gaierror, ConnectionError, TimeoutError))
