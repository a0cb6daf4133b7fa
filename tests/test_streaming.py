"""Layers go straight into the archive: headers filled in, cache contents, damage.

A plain ``.tar`` pull decompresses each blob into the archive while it
downloads (the header of the member is reserved and filled in at the end);
a ``.tar.gz`` pull unpacks into the cache first.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

import dgetkit
from dgetkit import archive
from dgetkit.cache import Cache
from dgetkit.digest import Digest
from dgetkit.errors import IntegrityError
from dgetkit.pull import BlobTail
from tests.support.images import (
    Layer,
    Pusher,
    make_config,
    make_layer,
    push_recorded,
    sha256_digest,
)

GiB = 1 << 30


def ref(registry, name: str) -> str:
    return f"{registry.host}/{name}"


def layer_members(path) -> dict[str, str]:
    """Each layer member of a docker-save archive and the sha256 of its content."""
    with tarfile.open(path) as tar:
        (item,) = json.loads(tar.extractfile("manifest.json").read())
        return {
            name: "sha256:" + hashlib.sha256(tar.extractfile(name).read()).hexdigest()
            for name in item["Layers"]
        }


@pytest.mark.parametrize(
    "size",
    [0, 1, 511, 8**11 - 1, 8**11, 10 * GiB],
    ids=["empty", "one-byte", "under-a-block", "octal-max", "base-256", "10-GiB"],
)
def test_a_filled_in_header_reads_back(size):
    header = tarfile.TarInfo("abc/layer.tar").tobuf(tarfile.PAX_FORMAT)

    info = tarfile.TarInfo.frombuf(archive._sized(header, size), "utf-8", "strict")

    assert (info.name, info.size) == ("abc/layer.tar", size)


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("single/oci-gzip:1", {"blob"}),
        ("single/oci-zstd:1", {"blob"}),
        ("single/docker-plain:1", {"blob", "layer"}),
    ],
    ids=["gzip", "zstd", "plain"],
)
def test_a_plain_tar_pull_caches_blobs_not_unpacked_copies(
    registry, images, tmp_path, name, kinds
):
    record = images[name]
    out = tmp_path / "a.tar"

    dgetkit.pull(ref(registry, name), out, cache=tmp_path / "cache", progress=False)

    assert sorted(layer_members(out).values()) == sorted(record["diff_ids"])
    assert {row["kind"] for row in Cache(tmp_path / "cache").entries()} == kinds


def test_a_tar_gz_pull_still_unpacks_into_the_cache(registry, images, tmp_path):
    record = images["single/oci-gzip:1"]
    cache = Cache(tmp_path / "cache")

    dgetkit.pull(
        ref(registry, "single/oci-gzip:1"),
        tmp_path / "a.tar.gz",
        cache=cache,
        progress=False,
    )

    layers = {row["digest"] for row in cache.entries() if row["kind"] == "layer"}
    assert layers == set(record["diff_ids"])


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[:-8] + bytes(4) + blob[-4:],  # CRC of the content
        lambda blob: blob[: len(blob) // 2],  # cut short
        lambda blob: blob[:20] + bytes(64) + blob[84:],  # deflate blocks
    ],
    ids=["crc", "truncated", "deflate"],
)
def test_a_layer_that_does_not_decompress_is_refused(registry, tmp_path, damage):
    good = make_layer({"data": bytes(range(256)) * 4000})
    broken = damage(good.data)
    layer = Layer(sha256_digest(broken), len(broken), good.diff_id, "gzip", broken)
    push_recorded(
        Pusher(registry.url), "broken/gzip", "1", [layer], make_config([layer])
    )
    out = tmp_path / "a.tar"

    with pytest.raises(IntegrityError, match="does not decompress|diff_id"):
        dgetkit.pull(ref(registry, "broken/gzip:1"), out, cache=False, progress=False)

    assert not out.exists()


class _WatchedTail(BlobTail):
    """Sets ``caught_up`` once the writer has read ``until`` bytes."""

    def __init__(self, until: int):
        super().__init__()
        self.until = until
        self.caught_up = threading.Event()

    def readable(self, position, attempt):
        if position >= self.until:
            self.caught_up.set()
        return super().readable(position, attempt)


@pytest.mark.parametrize("restarts", [False, True], ids=["straight", "started-over"])
def test_the_writer_follows_a_download_and_starts_over_with_it(tmp_path, restarts):
    layer = make_layer({"data": bytes(range(256)) * 20000})
    half = layer.size // 2
    part, blob = tmp_path / "blob.part", tmp_path / "blob"
    tail, future = _WatchedTail(half), Future()
    part.write_bytes(layer.data[:half])
    tail.started(part)
    tail.grew(half)

    def download() -> None:
        tail.caught_up.wait(10)
        if restarts:
            tail.ended(False)  # the writer must drop what it wrote
            blob.write_bytes(layer.data)
        else:
            with open(part, "ab") as handle:
                handle.write(layer.data[half:])
            tail.grew(layer.size - half)
            part.rename(blob)
            tail.ended(True)
        future.set_result(blob)

    descriptor = SimpleNamespace(digest=Digest.parse(layer.digest))
    stored = archive.ArchiveLayer(
        descriptor, Digest.parse(layer.diff_id), future, "none", tail=tail
    )
    out = tmp_path / "a.tar"
    thread = threading.Thread(target=download)
    thread.start()
    with open(out, "wb", buffering=0) as raw:
        tar = archive.TarWriter(raw)
        archive.LegacyLayout(tar)._layer_file("abc", stored, 0)
        tar.close()
    thread.join()

    with tarfile.open(out) as reader:
        members = reader.getmembers()
        content = reader.extractfile("abc/layer.tar").read()
    assert [m.name for m in members] == ["abc/layer.tar"]
    assert sha256_digest(content) == layer.diff_id
    assert stored.checked and tail.caught_up.is_set()
