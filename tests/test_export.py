"""Batch exports: a table of references in, archives and a results table out.

Every archive is read back (``inspect_archive``) or loaded (``podman load``);
the transcript proves that a layer shared by several rows is downloaded once.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import pandas as pd
import pytest

import dgetkit
from dgetkit import cli
from dgetkit import export as export_module
from dgetkit.errors import InvalidOption
from dgetkit.export import RESULT_COLUMNS, export_many, read_reference_file
from dgetkit.inspect import inspect_archive
from tests.support.loaders import podman_load

pytestmark = pytest.mark.integration


def quiet(table, folder, **options):
    options.setdefault("progress", False)
    return export_many(table, folder, **options)


def test_a_batch_with_failures_goes_on(registry, images, tmp_path, loader_dir):
    host = registry.host
    table = pd.DataFrame(
        [
            {"reference": f"{host}/multi/oci:1", "platform": "linux/arm64"},
            {"reference": f"{host}/single/oci-zstd:1", "name": "zstd"},
            {"reference": f"{host}/no/such:1"},
            {"reference": "Not A Reference!"},
            {"reference": f"{host}/multi/docker:1", "platform": "windows/amd64"},
            {"reference": f"{host}/dup/layer:1", "name": "dup.tar"},
        ]
    )
    results = quiet(table, tmp_path / "out", cache=tmp_path / "cache")

    assert list(results.columns) == list(RESULT_COLUMNS)
    assert list(results.reference) == list(table.reference)
    failed = results.error.notna()
    assert list(failed) == [False, False, True, True, True, False]
    assert "does not exist" in results.error[2] or "not found" in results.error[2]
    assert "not a valid image reference" in results.error[3]
    assert "linux/amd64" in results.error[4], "names the platforms that exist"

    arm = images["multi/oci:1"]["platforms"]["linux/arm64/v8"]
    assert results.digest[0] == arm["digest"]
    assert results.platform[0] == "linux/arm64"
    assert results.path[0] == str(tmp_path / "out" / "oci_1_linux-arm64.tar")
    assert results.path[1] == str(tmp_path / "out" / "zstd.tar")
    assert results.path[5] == str(tmp_path / "out" / "dup.tar")
    for row in results[~failed].itertuples():
        contents = inspect_archive(row.path)
        assert row.bytes == pd.io.common.Path(row.path).stat().st_size
        assert row.seconds >= 0
        assert len(contents.images) == 1
    assert results[failed].path.isna().all() and results[failed].digest.isna().all()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "dup.tar",
        "oci_1_linux-arm64.tar",
        "zstd.tar",
    ]
    assert podman_load(results.path[0], loader_dir) == [f"{host}/multi/oci:1"]


def test_shared_layers_are_downloaded_once(registry, images, tmp_path):
    host = registry.host
    references = [
        f"{host}/multi/oci:1",
        f"{host}/multi/docker:1",
        f"{host}/multi/oci:1",
        f"{host}/dup/layer:1",
    ]
    table = [
        {"reference": r, "name": f"{n}.tar", "platform": "linux/amd64"}
        for n, r in enumerate(references)
    ]
    with dgetkit.record() as transcript:
        results = quiet(table, tmp_path, cache=False, jobs=4, archives=4)
    assert results.error.isna().all(), list(results.error)
    layer_gets = [
        urlsplit(e.url).path.rsplit("/", 1)[1]
        for e in transcript.exchanges
        if e.method == "GET" and "/blobs/" in e.url and e.status == 200
    ]
    oci = images["multi/oci:1"]["platforms"]["linux/amd64"]
    docker = images["multi/docker:1"]["platforms"]["linux/amd64"]
    layers = {*oci["layer_digests"], *docker["layer_digests"]}
    layers |= set(images["dup/layer:1"]["layer_digests"])
    assert oci["layer_digests"][0] == docker["layer_digests"][0], "the shared layer"
    for digest in layers:
        assert layer_gets.count(digest) == 1, digest
    sizes = {
        layer.digest: layer.size
        for record in (oci, docker, images["dup/layer:1"])
        for layer in record["layers"]
    }
    assert results.attrs["downloaded"] == sum(sizes.values())


def test_archives_are_written_at_most_n_at_once(
    registry, images, tmp_path, monkeypatch
):
    running, most = [0], [0]
    lock = threading.Lock()
    real_pull = export_module.pull

    def counting_pull(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.2)
            return real_pull(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(export_module, "pull", counting_pull)
    table = [f"{registry.host}/tags/many:t{n:02d}" for n in range(6)]
    results = quiet(table, tmp_path, cache=False, archives=2)
    assert results.error.isna().all()
    assert most[0] == 2


# (id, layout options, what inspect_archive reports)
LAYOUTS = [
    ("legacy", {}, ("docker", "none")),
    ("compressed-layers", {"compressed_layers": True}, ("docker", "gzip")),
    ("oci-layout", {"oci_layout": True}, ("oci+docker", "gzip")),
]


@pytest.mark.parametrize(
    "options, expected", [c[1:] for c in LAYOUTS], ids=[c[0] for c in LAYOUTS]
)
def test_layout_options_reach_every_archive(
    registry, images, tmp_path, options, expected
):
    table = [f"{registry.host}/single/oci-gzip:1", f"{registry.host}/history/empty:1"]
    results = quiet(table, tmp_path, cache=False, **options)
    assert results.error.isna().all()
    for path in results.path:
        contents = inspect_archive(path)
        assert (contents.layout, contents.layers.compression[0]) == expected


def test_existing_archives_fail_their_rows_unless_overwrite(registry, images, tmp_path):
    table = [f"{registry.host}/dup/layer:1", f"{registry.host}/a/b/c/deep:1"]
    (tmp_path / "layer_1.tar").write_bytes(b"old")
    results = quiet(table, tmp_path, cache=False)
    assert "already exists" in results.error[0]
    assert results.error[1] is None
    assert (tmp_path / "layer_1.tar").read_bytes() == b"old"
    results = quiet(table, tmp_path, cache=False, overwrite=True)
    assert results.error.isna().all()
    assert inspect_archive(tmp_path / "layer_1.tar").images.layers[0] == 2


def test_two_rows_wanting_one_file_name(registry, images, tmp_path):
    table = [
        {"reference": f"{registry.host}/dup/layer:1", "name": "same"},
        {"reference": f"{registry.host}/a/b/c/deep:1", "name": "same.tar"},
    ]
    results = quiet(table, tmp_path, cache=False)
    assert results.error[0] is None
    assert "row 1" in results.error[1] and "another 'name'" in results.error[1]


# (id, table, error words)
BAD_TABLES = [
    ("no-reference-column", pd.DataFrame({"image": ["alpine"]}), "'reference' column"),
    ("row-without-reference", [{"platform": "linux/amd64"}], "no 'reference'"),
    ("not-a-row", [42], "cannot read a table row"),
]


@pytest.mark.parametrize(
    "table, words", [c[1:] for c in BAD_TABLES], ids=[c[0] for c in BAD_TABLES]
)
def test_unreadable_tables_are_refused_up_front(tmp_path, table, words):
    with pytest.raises(InvalidOption, match=words):
        quiet(table, tmp_path)


# -- reference files ---------------------------------------------------------------

# (id, line, parsed row)
LINES = [
    ("reference-only", "alpine:3.20", ("alpine:3.20", None, None)),
    ("platform", "alpine:3.20 linux/arm64", ("alpine:3.20", "linux/arm64", None)),
    ("name", "alpine:3.20 a.tar", ("alpine:3.20", None, "a.tar")),
    ("gzip-name", "alpine:3.20   a.tar.gz", ("alpine:3.20", None, "a.tar.gz")),
    ("all-three", "nginx linux/arm/v7 n.tgz", ("nginx", "linux/arm/v7", "n.tgz")),
    ("dash-platform", "nginx - n", ("nginx", None, "n")),
    ("inline-comment", "busybox  # the small one", ("busybox", None, None)),
    ("tabs", "\tbusybox\tlinux/amd64\t", ("busybox", "linux/amd64", None)),
]


@pytest.mark.parametrize("line, row", [c[1:] for c in LINES], ids=[c[0] for c in LINES])
def test_reference_file_lines(tmp_path, line, row):
    path = tmp_path / "refs.txt"
    path.write_text(f"# header comment\n\n{line}\n   \n")
    table = read_reference_file(path)
    assert list(table.columns) == ["reference", "platform", "name"]
    assert [tuple(r) for r in table.itertuples(index=False)] == [row]


def test_reference_file_with_too_many_fields(tmp_path):
    path = tmp_path / "refs.txt"
    path.write_text("alpine\nalpine linux/amd64 a.tar extra\n")
    with pytest.raises(InvalidOption, match="line 2"):
        read_reference_file(path)


def test_missing_reference_file(tmp_path):
    with pytest.raises(InvalidOption, match="cannot read"):
        read_reference_file(tmp_path / "nothere.txt")


def test_reference_file_feeds_export(registry, images, tmp_path):
    path = tmp_path / "refs.txt"
    path.write_text(
        f"{registry.host}/multi/docker:1 linux/arm/v7 arm.tar\n"
        f"{registry.host}/dup/layer:1\n"
    )
    results = quiet(read_reference_file(path), tmp_path / "out", cache=False)
    assert results.error.isna().all()
    assert list(results.platform) == ["linux/arm/v7", "linux/amd64"]
    arm = images["multi/docker:1"]["platforms"]["linux/arm/v7"]
    assert results.digest[0] == arm["digest"]


def test_cli_from_file(registry, images, tmp_path, capsys, loader_dir):
    path = tmp_path / "refs.txt"
    path.write_text(f"{registry.host}/dup/layer:1 dup.tar\n{registry.host}/no/such:1\n")
    out = tmp_path / "out"
    code = cli.main(
        [
            "pull",
            "--from-file",
            str(path),
            "-o",
            str(out),
            "--no-progress",
            "--no-cache",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED" in captured.err and "no/such" in captured.err
    assert "1 of 2 exported" in captured.out
    assert podman_load(out / "dup.tar", loader_dir) == [f"{registry.host}/dup/layer:1"]


def test_file_rows_are_named_by_line(registry, images, tmp_path):
    listing = tmp_path / "refs.txt"
    listing.write_text(
        f"# two rows want one file\n\n{registry.host}/dup/layer:1 same.tar\n"
        f"{registry.host}/a/b/c/deep:1 same.tar\n"
    )
    results = quiet(read_reference_file(listing), tmp_path / "out", cache=False)
    assert "line 3" in results.error[1]
