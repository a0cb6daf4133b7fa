"""Reading archives back with ``inspect_archive``, whoever wrote them.

Archives come from dgetkit (each layout), ``skopeo copy`` to
``docker-archive:`` and ``oci-archive:``, and ``podman save`` in both
formats; what ``inspect_archive`` reports is compared with what was pushed.
"""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

import dgetkit
from dgetkit.errors import DgetkitError
from dgetkit.inspect import inspect_archive
from tests.support.loaders import podman, podman_load, skopeo_copy_to_archive

pytestmark = pytest.mark.integration


class Maker:
    """Writes one archive of ``references`` the way one tool does."""

    def __init__(self, registry, tmp_path, loader_dir):
        self.registry, self.tmp_path, self.loader_dir = registry, tmp_path, loader_dir

    def name(self, reference: str) -> str:
        return f"{self.registry.host}/{reference}"

    def dgetkit(self, references, suffix=".tar", **options):
        path = self.tmp_path / f"dgetkit{suffix}"
        names = [self.name(r) for r in references]
        dgetkit.pull(names, path, progress=False, cache=False, **options)
        return path

    def skopeo(self, references, transport):
        path = self.tmp_path / f"skopeo-{transport}.tar"
        (reference,) = references
        return skopeo_copy_to_archive(
            self.name(reference), path, dest_transport=transport
        )

    def podman_save(self, references, fmt):
        # Saving an image as OCI keeps its config only if it was stored as OCI.
        source = self.dgetkit(references, oci_layout=fmt == "oci-archive")
        podman_load(source, self.loader_dir)
        path = self.tmp_path / f"podman-{fmt}.tar"
        names = [self.name(r) for r in references]
        extra = ["--multi-image-archive"] if len(names) > 1 else []
        podman(
            ["save", "--format", fmt, *extra, "-o", str(path), *names], self.loader_dir
        )
        return path


# (id, how to write it, references, layout, compression inside, names recorded?)
SOURCES = [
    (
        "dgetkit-legacy",
        lambda m, r: m.dgetkit(r),
        ["single/oci-gzip:1"],
        "docker",
        "none",
        True,
    ),
    (
        "dgetkit-compressed-layers",
        lambda m, r: m.dgetkit(r, compressed_layers=True),
        ["single/oci-zstd:1"],
        "docker",
        "zstd",
        True,
    ),
    (
        "dgetkit-oci-layout",
        lambda m, r: m.dgetkit(r, oci_layout=True),
        ["single/docker-gzip:1"],
        "oci+docker",
        "gzip",
        True,
    ),
    (
        "dgetkit-gzip-archive",
        lambda m, r: m.dgetkit(r, suffix=".tar.gz"),
        ["single/oci-plain:1"],
        "docker",
        "none",
        True,
    ),
    (
        "dgetkit-several-images",
        lambda m, r: m.dgetkit(r),
        ["dup/layer:1", "history/empty:1", "a/b/c/deep:1"],
        "docker",
        "none",
        True,
    ),
    (
        "skopeo-docker-archive",
        lambda m, r: m.skopeo(r, "docker-archive"),
        ["single/oci-gzip:1"],
        "docker",
        "none",
        False,
    ),
    (
        "skopeo-oci-archive",
        lambda m, r: m.skopeo(r, "oci-archive"),
        ["single/oci-gzip:1"],
        "oci",
        "gzip",
        False,
    ),
    (
        "podman-save-docker-archive",
        lambda m, r: m.podman_save(r, "docker-archive"),
        ["dup/layer:1", "single/oci-zstd:1"],
        "docker",
        "none",
        True,
    ),
    (
        "podman-save-oci-archive",
        lambda m, r: m.podman_save(r, "oci-archive"),
        ["single/oci-plain:1"],
        "oci",
        "gzip",
        True,
    ),
]


@pytest.mark.parametrize(
    "make, references, layout, compression, named",
    [c[1:] for c in SOURCES],
    ids=[c[0] for c in SOURCES],
)
def test_inspect_archives_from_every_writer(
    registry, images, tmp_path, loader_dir, make, references, layout, compression, named
):
    maker = Maker(registry, tmp_path, loader_dir)
    path = make(maker, references)
    contents = inspect_archive(path)
    records = [images[r] for r in references]

    assert contents.layout == layout
    assert list(contents.images.config_digest) == [r["config_digest"] for r in records]
    assert list(contents.images.platform) == ["linux/amd64"] * len(records)
    assert list(contents.images.layers) == [len(r["diff_ids"]) for r in records]
    if named:
        assert [tags[0] for tags in contents.images.repo_tags] == [
            maker.name(r) for r in references
        ]
        assert list(contents.images.image) == [maker.name(r) for r in references]

    for label, record in zip(contents.images.image, records):
        rows = contents.layers[contents.layers.image == label]
        assert list(rows.diff_id) == record["diff_ids"]
        assert list(rows["index"]) == list(range(len(record["diff_ids"])))
        assert (rows["size"] > 0).all()
        assert set(rows.compression) == {compression}
        if layout.startswith("oci"):
            assert all(p.startswith("blobs/sha256/") for p in rows.path)
            assert rows.digest.notna().all() and rows.media_type.notna().all()
    stored = {p: s for p, s in zip(contents.layers.path, contents.layers["size"])}
    for label, size in zip(contents.images.image, contents.images["size"]):
        paths = set(contents.layers[contents.layers.image == label].path)
        assert size == sum(stored[p] for p in paths)


def test_oci_layout_reports_the_registry_descriptors(registry, images, tmp_path):
    record = images["single/oci-zstd:1"]
    path = tmp_path / "z.tar"
    dgetkit.pull(
        f"{registry.host}/single/oci-zstd:1",
        path,
        oci_layout=True,
        progress=False,
        cache=False,
    )
    contents = inspect_archive(path)
    assert list(contents.images.manifest_digest) == [record["digest"]]
    assert list(contents.layers.digest) == record["layer_digests"]
    assert list(contents.layers.media_type) == [
        layer.media_type("oci") for layer in record["layers"]
    ]
    assert list(contents.layers["size"]) == [layer.size for layer in record["layers"]]


def test_repeated_layers_point_at_one_member(registry, images, tmp_path):
    path = tmp_path / "dup.tar"
    dgetkit.pull(f"{registry.host}/dup/layer:1", path, progress=False, cache=False)
    layers = inspect_archive(path).layers
    assert len(layers) == 2
    assert layers.path[0] == layers.path[1]
    assert inspect_archive(path).images["size"][0] == layers["size"][0]


def test_html_and_text_views(registry, images, tmp_path):
    path = tmp_path / "h.tar"
    name = f"{registry.host}/history/empty:1"
    dgetkit.pull(name, path, progress=False, cache=False)
    contents = inspect_archive(path)
    html = contents._repr_html_()
    assert name in html and "<table" in html and html.count("<table") == 2
    assert (
        repr(contents) == "<ArchiveContents h.tar: docker layout, 1 images, 2 layers>"
    )


# (id, content, what the error says)
NOT_ARCHIVES = [
    ("empty-tar", [], "neither"),
    (
        "missing-config",
        [("manifest.json", b'[{"Config":"c.json","Layers":[]}]')],
        "c.json",
    ),
    ("manifest-not-a-list", [("manifest.json", b'{"a": 1}')], "not a list"),
]


@pytest.mark.parametrize(
    "entries, words", [c[1:] for c in NOT_ARCHIVES], ids=[c[0] for c in NOT_ARCHIVES]
)
def test_what_is_not_an_image_archive(tmp_path, entries, words):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DgetkitError, match=words):
        inspect_archive(path)


def test_not_a_tar_at_all(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(gzip.compress(b"hello"))
    with pytest.raises((DgetkitError, tarfile.TarError)):
        inspect_archive(path)


@pytest.mark.parametrize(
    "content", [None, b"not a tar at all" * 100], ids=["missing", "garbage"]
)
def test_not_an_archive_is_a_named_error(tmp_path, content):
    from dgetkit.errors import InvalidArchive

    path = tmp_path / "file.tar"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidArchive, match=str(path)):
        dgetkit.inspect_archive(path)
