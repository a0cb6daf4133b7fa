"""Several images in one archive: each distinct layer stored once, all loadable.

``pull([ref1, ref2, ...], path)`` writes one ``manifest.json`` entry per
image and a merged ``repositories``; ``podman load`` must load every image.
The tests read the tar back and check that each diff_id is held by exactly
one regular member (repeats are symlinks in the legacy layout, the same
``blobs/`` path in the OCI layout).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest
import zstandard

import dgetkit
from dgetkit import cli
from tests.support.loaders import podman_inspect, podman_load

pytestmark = pytest.mark.integration

# (id, references, platform for all, diff_ids shared between the images)
SETS = [
    ("index-and-list-share-a-layer", ["multi/oci:1", "multi/docker:1"], "linux/amd64"),
    ("repeated-layer-and-deep-name", ["dup/layer:1", "a/b/c/deep:1"], None),
    ("same-image-two-tags", ["tags/many:t00", "tags/many:t01"], None),
    (
        "three-images-three-compressions",
        ["single/oci-gzip:1", "single/oci-zstd:1", "single/docker-plain:1"],
        None,
    ),
]
LAYOUTS = {
    "legacy": {},
    "compressed-layers": {"compressed_layers": True},
    "oci-layout": {"oci_layout": True},
}


def record_of(images, reference, platform):
    record = images.get(reference) or images[reference.split(":")[0]]
    return record["platforms"][platform] if platform else record


def members(path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        listed = tar.getmembers()
    found = {m.name: m for m in listed}
    assert len(found) == len(listed), "a member name is written twice"
    return found


def read(path, name) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def diff_id_of(data: bytes) -> str:
    if data[:3] == b"\x1f\x8b\x08":
        data = gzip.decompress(data)
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
@pytest.mark.parametrize(
    "references, platform", [c[1:] for c in SETS], ids=[c[0] for c in SETS]
)
def test_several_images_in_one_archive(
    registry, images, tmp_path, loader_dir, references, platform, layout
):
    names = [f"{registry.host}/{ref}" for ref in references]
    records = [record_of(images, ref, platform) for ref in references]
    path = tmp_path / "many.tar"
    result = dgetkit.pull(
        names,
        path,
        platform=platform,
        progress=False,
        cache=tmp_path / "cache",
        **LAYOUTS[layout],
    )
    assert [image.config_digest for image in result.images] == [
        r["config_digest"] for r in records
    ]

    entries = json.loads(read(path, "manifest.json"))
    assert [e["RepoTags"] for e in entries] == [[name] for name in names]
    for entry, record in zip(entries, records):
        assert len(entry["Layers"]) == len(record["diff_ids"])

    found = members(path)
    assert not any(m.islnk() for m in found.values()), "hard links break loaders"
    # The OCI layout stores blobs by digest; the others store layers by diff_id.
    by = "layer_digests" if layout == "oci-layout" else "diff_ids"
    stored = {}
    for name, member in found.items():
        if member.isfile() and _is_layer_path(name):
            data = read(path, name)
            key = _digest(data) if by == "layer_digests" else diff_id_of(data)
            stored.setdefault(key, []).append(name)
    wanted = {d for r in records for d in r[by]}
    assert {d: len(stored.get(d, [])) for d in wanted} == dict.fromkeys(wanted, 1)

    if "repositories" in found:
        repositories = json.loads(read(path, "repositories"))
        for ref in references:
            repository, tag = f"{registry.host}/{ref}".rsplit(":", 1)
            assert tag in repositories[repository]

    loaded = podman_load(path, loader_dir)
    assert sorted(loaded) == sorted(names)
    for name, record in zip(names, records):
        assert podman_inspect(name, loader_dir)["Id"] == record["config_digest"][7:]


def _is_layer_path(name: str) -> bool:
    if name.startswith("blobs/"):
        return True
    return name.rsplit("/", 1)[-1].startswith("layer.tar")


def test_cli_several_references(registry, images, tmp_path, capsys, loader_dir):
    names = [f"{registry.host}/dup/layer:1", f"{registry.host}/history/empty:1"]
    out = tmp_path / "two.tar"
    code = cli.main(["pull", *names, "-o", str(out), "--no-progress", "--no-cache"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert images["dup/layer:1"]["digest"] in printed
    assert images["history/empty:1"]["digest"] in printed
    assert sorted(podman_load(out, loader_dir)) == sorted(names)
