"""The OCI image layout inside the archive (``oci_layout=True``), as Docker 25+.

Loaders that find ``oci-layout`` read the OCI layout and ignore
``manifest.json``, so it must be exact: every ``blobs/sha256/<hex>`` hashes to
its name, ``index.json`` points at the registry's own manifest bytes with
both name annotations, and ``skopeo inspect oci-archive:`` and ``podman
load`` read it.
"""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest

import dgetkit
from tests.support.loaders import podman_inspect, podman_load, skopeo_inspect

pytestmark = pytest.mark.integration

OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# (id, reference in the catalogue, platform)
IMAGES = [
    ("oci-gzip", "single/oci-gzip:1", None),
    ("oci-zstd", "single/oci-zstd:1", None),
    ("oci-uncompressed", "single/oci-plain:1", None),
    ("docker-schema2-manifest", "single/docker-gzip:1", None),
    ("docker-uncompressed", "single/docker-plain:1", None),
    ("from-an-index", "multi/oci:1", "linux/arm64"),
    ("from-a-docker-list", "multi/docker:1", "linux/arm/v7"),
    ("repeated-layer", "dup/layer:1", None),
    ("empty-layer-history", "history/empty:1", None),
]


def record_of(images, reference, platform):
    record = images[reference]
    if platform and "platforms" in record:
        wanted = dgetkit.Platform.parse(platform)
        for name, child in record["platforms"].items():
            if wanted.matches(dgetkit.Platform.parse(name)):
                return child
    return record


def read_all(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()
        }


def check_layout(files: dict[str, bytes], names: list[str], records: list[dict]):
    """Everything a strict OCI layout reader relies on."""
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    blobs = {n: b for n, b in files.items() if n.startswith("blobs/")}
    for name, data in blobs.items():
        algorithm, hexpart = name.split("/")[1:]
        assert hashlib.new(algorithm, data).hexdigest() == hexpart, name

    index = json.loads(files["index.json"])
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    assert len(index["manifests"]) == len(records)
    for entry, name, record in zip(index["manifests"], names, records):
        assert entry["digest"] == record["digest"]
        assert entry["mediaType"] == record["media_type"]
        manifest = blobs[f"blobs/sha256/{entry['digest'][7:]}"]
        assert entry["size"] == len(manifest)
        assert entry["annotations"] == {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
        }
        body = json.loads(manifest)
        for descriptor in [body["config"], *body["layers"]]:
            blob = blobs[f"blobs/sha256/{descriptor['digest'][7:]}"]
            assert len(blob) == descriptor["size"]
        assert [d["digest"] for d in body["layers"]] == record["layer_digests"]

    entries = json.loads(files["manifest.json"])
    for entry, record in zip(entries, records):
        assert entry["Config"] == f"blobs/sha256/{record['config_digest'][7:]}"
        assert all(path in blobs for path in entry["Layers"])


@pytest.mark.parametrize(
    "reference, platform", [c[1:] for c in IMAGES], ids=[c[0] for c in IMAGES]
)
def test_oci_layout_is_exact_and_loads(
    registry, images, tmp_path, loader_dir, reference, platform
):
    record = record_of(images, reference, platform)
    name = f"{registry.host}/{reference}"
    path = tmp_path / "oci.tar"
    dgetkit.pull(
        name, path, platform=platform, oci_layout=True, progress=False, cache=False
    )
    check_layout(read_all(path), [name], [record])

    seen = skopeo_inspect(path, "oci-archive")
    assert seen["Layers"] == record["layer_digests"]
    assert seen["Digest"] == record["digest"]
    raw = skopeo_inspect(path, "oci-archive", raw=True)
    assert raw["config"]["digest"] == record["config_digest"]

    assert podman_load(path, loader_dir) == [name]
    loaded = podman_inspect(name, loader_dir)
    assert loaded["Id"] == record["config_digest"][7:]
    assert loaded["RootFS"]["Layers"] == record["diff_ids"]


def test_oci_layout_with_several_images(registry, images, tmp_path, loader_dir):
    references = ["single/oci-gzip:1", "single/docker-gzip:1", "multi/oci:1"]
    names = [f"{registry.host}/{r}" for r in references]
    records = [record_of(images, r, "linux/amd64") for r in references]
    path = tmp_path / "several.tar"
    dgetkit.pull(
        names,
        path,
        platform="linux/amd64",
        oci_layout=True,
        progress=False,
        cache=False,
    )
    check_layout(read_all(path), names, records)
    assert sorted(podman_load(path, loader_dir)) == sorted(names)
    for name, record in zip(names, records):
        assert podman_inspect(name, loader_dir)["Id"] == record["config_digest"][7:]


def test_oci_layout_of_a_digest_pull_has_no_names(registry, images, tmp_path):
    record = images["single/oci-gzip:1"]
    name = f"{registry.host}/single/oci-gzip@{record['digest']}"
    path = tmp_path / "pinned.tar"
    dgetkit.pull(name, path, oci_layout=True, progress=False, cache=False)
    index = json.loads(read_all(path)["index.json"])
    assert [e["digest"] for e in index["manifests"]] == [record["digest"]]
    assert "annotations" not in index["manifests"][0]
    assert skopeo_inspect(path, "oci-archive")["Digest"] == record["digest"]
