"""Downloads from a local HTTP server: verification, atomicity, archives, load_dataset(download)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import pickle
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import selfsup.data.registry as registry
from selfsup.data import FileInfo, download_file, extract_archive, load_dataset
from selfsup.data.download import _record_file
from selfsup.errors import DataError

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
LABELS_MD5 = "bb300cfdad3c16e7a12a480ee83cd310"


@dataclasses.dataclass
class Server:
    root: Path  # the folder served
    url: str
    requests: list[str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A threaded HTTP server on 127.0.0.1 (any free port) serving a temporary folder."""
    root = tmp_path_factory.mktemp("served")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("no_proxy", "127.0.0.1,localhost")  # never send local requests to a proxy
        yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _serve(server: Server, name: str, data: bytes) -> str:
    path = server.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{server.url}/{name}"


def test_download_file_verifies_and_records(server: Server, tmp_path: Path) -> None:
    payload = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several chunks
    url = _serve(server, "blob.bin", payload)
    dest = download_file(url, tmp_path / "out" / "blob.bin", md5=hashlib.md5(payload).hexdigest(),
                         sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
                         progress=False)
    assert dest.read_bytes() == payload
    # the record of the check is selfsup's, in its cache, not a sidecar beside the file
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]
    assert _record_file(dest).is_file()


def test_checksum_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    url = _serve(server, "wrong.bin", b"these are not the bytes you are looking for")
    dest = tmp_path / "wrong.bin"
    with pytest.raises(DataError, match=rf"{url}: md5 checksum mismatch: expected 0+, got "
                                        r"[0-9a-f]{32}"):
        download_file(url, dest, md5="0" * 32, progress=False)
    with pytest.raises(DataError, match=rf"{url}: size mismatch: expected 5 bytes, got 43"):
        download_file(url, dest, size=5, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither dest nor a .part file


def test_http_errors_name_the_url(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"{server.url}/missing\.gz: download failed: .*404"):
        download_file(f"{server.url}/missing.gz", tmp_path / "m.gz", progress=False)
    with pytest.raises(DataError, match="download failed"):
        download_file("http://127.0.0.1:9/x.gz", tmp_path / "x.gz", progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_load_dataset_downloads_from_mirror(server: Server, tmp_path: Path,
                                            fashion_dir: Path) -> None:
    for name in TEST_FILES:
        (server.root / "fm").mkdir(exist_ok=True)
        (server.root / "fm" / name).symlink_to(fashion_dir / name)
    root = tmp_path / "fashion"
    data = load_dataset("fashion-mnist", root, "test", download=True,
                        base_url=f"{server.url}/fm/")
    assert len(data) == 10000 and data.labels is not None
    # Only the split's files, each verified once (recorded in the cache) and moved into place.
    assert sorted(p.name for p in root.iterdir()) == sorted(TEST_FILES)
    assert all(_record_file(root / n).is_file() for n in TEST_FILES)
    before = len(server.requests)
    load_dataset("fashion-mnist", root, "test", download=True, base_url=f"{server.url}/fm/")
    assert len(server.requests) == before  # present files are not fetched again
    # root=None: the cache folder <cache_dir>/<name>.
    cached = load_dataset("fashion-mnist", split="test", download=True,
                          cache_dir=tmp_path / "cache", base_url=f"{server.url}/fm")
    assert len(cached) == 10000 and (tmp_path / "cache" / "fashion-mnist" / TEST_FILES[1]).is_file()


def test_load_dataset_rejects_corrupt_mirror(server: Server, tmp_path: Path,
                                             fashion_dir: Path) -> None:
    (server.root / "bad").mkdir(exist_ok=True)
    shutil.copyfile(fashion_dir / TEST_FILES[0], server.root / "bad" / TEST_FILES[0])
    raw = bytearray((fashion_dir / TEST_FILES[1]).read_bytes())
    raw[100] ^= 0x01
    (server.root / "bad" / TEST_FILES[1]).write_bytes(raw)
    root = tmp_path / "fashion"
    with pytest.raises(DataError, match=rf"bad/{TEST_FILES[1]}: md5 checksum mismatch: "
                                        rf"expected {LABELS_MD5}, got [0-9a-f]{{32}}"):
        load_dataset("fashion-mnist", root, "test", download=True, base_url=f"{server.url}/bad")
    assert not (root / TEST_FILES[1]).exists()
    assert not list(root.glob("*.part"))


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("bad_name", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_extract_rejects_unsafe_members(tmp_path: Path, bad_name: str) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar_gz({"ok/fine.txt": b"fine", bad_name: b"evil"}))
    with pytest.raises(DataError, match=r"a\.tar\.gz: refusing to extract member"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # nothing written, not even ok/


def test_extract_rejects_links_and_garbage(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("innocent")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="refusing to extract member 'innocent'"):
        extract_archive(archive, tmp_path / "out")
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match=r"junk\.tar\.gz: cannot extract"):
        extract_archive(tmp_path / "junk.tar.gz", tmp_path / "out")


def test_archive_download_and_extract(server: Server, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def batch(n: int) -> bytes:
        data = np.full((n, 3072), 7, np.uint8)
        return pickle.dumps({b"data": data, b"labels": list(range(n))}, protocol=2)

    members = {f"cifar-10-batches-py/data_batch_{i}": batch(2) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = batch(3)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [b"c%d" % i for i in range(10)]}, protocol=2)
    archive = _tar_gz(members)
    _serve(server, "kriz/cifar-10-python.tar.gz", archive)
    # The real archive is 170 MB: point the registry at this small one instead.
    info = dataclasses.replace(registry.DATASETS["cifar10"], archive=FileInfo(
        "cifar-10-python.tar.gz", len(archive), hashlib.md5(archive).hexdigest()))
    monkeypatch.setitem(registry.DATASETS, "cifar10", info)
    with pytest.warns(UserWarning, match="not the official full set"):
        test = load_dataset("cifar10", tmp_path / "c10", "test", download=True,
                            base_url=f"{server.url}/kriz", verify="warn")
    assert len(test) == 3 and test.classes[2] == "c2"
    assert (tmp_path / "c10" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not [p for p in (tmp_path / "c10").iterdir() if p.name.startswith(".extract")]
