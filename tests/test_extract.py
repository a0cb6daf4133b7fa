"""Root filesystem extraction: whiteouts, links, modes, and hostile layers.

Crafted layers are written with :mod:`tarfile` entry by entry (so they can
say anything a hostile layer might) and applied with ``extract_layer``; whole
images come from the test registry through ``extract``. Every hostile case
checks that a sentinel folder beside the extraction root is untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

import dgetkit
from dgetkit.errors import OutputError, UnsafeArchiveMember
from dgetkit.extract import extract, extract_layer
from tests.support.images import (
    Layer,
    Pusher,
    make_config,
    sha256_digest,
    whiteout_layers,
)

IS_ROOT = os.geteuid() == 0


# -- crafting layers ---------------------------------------------------------------


def F(name, data=b"", mode=0o644, uid=0, gid=0):
    """A regular file entry."""
    return ("file", name, data, mode, uid, gid)


def D(name, mode=0o755, uid=0, gid=0):
    return ("dir", name, None, mode, uid, gid)


def S(name, target):
    return ("symlink", name, target, 0o777, 0, 0)


def H(name, target):
    return ("hardlink", name, target, 0o644, 0, 0)


def FIFO(name):
    return ("fifo", name, None, 0o644, 0, 0)


def CHR(name, major, minor):
    return ("chr", name, (major, minor), 0o666, 0, 0)


_TYPES = {
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chr": tarfile.CHRTYPE,
}


def craft(*entries, mtime=1_700_000_000) -> bytes:
    """A tar holding exactly ``entries``, in order, names untouched."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, value, mode, uid, gid in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
            if kind == "file":
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
                continue
            info.type = _TYPES[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = value
            if kind == "chr":
                info.devmajor, info.devminor = value
            tar.addfile(info)
    return buffer.getvalue()


def apply(root: Path, *layers) -> list:
    """Apply crafted layers (lists of entries) bottom first."""
    root.mkdir(exist_ok=True)
    return [
        extract_layer(io.BytesIO(craft(*entries)), root, layer=f"layer {n}")
        for n, entries in enumerate(layers)
    ]


def snapshot(root: Path) -> dict:
    """Every path below ``root``: kind plus content/target and permission bits."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            relative = str(path.relative_to(root))
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir", mode)
            elif stat.S_ISREG(info.st_mode):
                found[relative] = ("file", path.read_bytes(), mode)
            else:
                found[relative] = ("special", stat.S_IFMT(info.st_mode))
    return found


@pytest.fixture
def sandbox(tmp_path):
    """An extraction root beside an ``outside`` folder holding a victim file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"original\n")
    root = tmp_path / "root"
    root.mkdir()
    yield root
    assert (outside / "victim").read_bytes() == b"original\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "root"]


# -- layer semantics ---------------------------------------------------------------

DIR = ("dir", 0o755)

# (id, layers bottom first, expected snapshot)
SEMANTICS = [
    (
        "whiteout-file",
        [[F("a", b"1"), F("b", b"2")], [F(".wh.a")]],
        {"b": ("file", b"2", 0o644)},
    ),
    (
        "whiteout-folder-tree",
        [[D("d"), F("d/x"), D("d/y"), F("d/y/z")], [F(".wh.d")]],
        {},
    ),
    (
        "whiteout-does-not-hide-same-layer-entry-before-it",
        [[F("a", b"old")], [F("a", b"new"), F(".wh.a")]],
        {"a": ("file", b"new", 0o644)},
    ),
    (
        "whiteout-then-recreate-folder",
        [[D("d"), F("d/x")], [F(".wh.d"), D("d"), F("d/y", b"y")]],
        {"d": DIR, "d/y": ("file", b"y", 0o644)},
    ),
    (
        "opaque-marker-first-hides-lower-children-only",
        [
            [D("d"), F("d/old"), D("d/sub"), F("d/sub/old"), F("keep", b"k")],
            [D("d"), F("d/.wh..wh..opq"), F("d/new", b"n"), F("d/sub/new", b"s")],
        ],
        {
            "d": DIR,
            "d/new": ("file", b"n", 0o644),
            "d/sub": DIR,
            "d/sub/new": ("file", b"s", 0o644),
            "keep": ("file", b"k", 0o644),
        },
    ),
    (
        "opaque-marker-last-keeps-same-layer-children",
        [
            [D("d"), F("d/old"), D("d/sub"), F("d/sub/old")],
            [F("d/new", b"n"), F("d/sub/new", b"s"), F("d/.wh..wh..opq")],
        ],
        {
            "d": DIR,
            "d/new": ("file", b"n", 0o644),
            "d/sub": DIR,
            "d/sub/new": ("file", b"s", 0o644),
        },
    ),
    (
        "opaque-on-root",
        [[F("a"), D("b")], [F(".wh..wh..opq"), F("c", b"c")]],
        {"c": ("file", b"c", 0o644)},
    ),
    (
        "file-replaces-folder",
        [[D("d"), F("d/x")], [F("d", b"f")]],
        {"d": ("file", b"f", 0o644)},
    ),
    (
        "folder-replaces-file",
        [[F("d", b"f")], [D("d", 0o750), F("d/x", b"x")]],
        {"d": ("dir", 0o750), "d/x": ("file", b"x", 0o644)},
    ),
    (
        "folder-entry-replaces-symlink",
        [[S("d", "/tmp")], [D("d"), F("d/x", b"x")]],
        {"d": DIR, "d/x": ("file", b"x", 0o644)},
    ),
    (
        "write-through-merged-usr-symlink",
        [[D("usr"), D("usr/lib"), S("lib", "usr/lib")], [F("lib/libc.so", b"c")]],
        {
            "usr": DIR,
            "usr/lib": DIR,
            "usr/lib/libc.so": ("file", b"c", 0o644),
            "lib": ("link", "usr/lib"),
        },
    ),
    (
        "symlinks-stored-never-followed",
        [[S("shadow", "/etc/shadow"), S("up", "../../.."), S("dangling", "nowhere")]],
        {
            "shadow": ("link", "/etc/shadow"),
            "up": ("link", "../../.."),
            "dangling": ("link", "nowhere"),
        },
    ),
    (
        "modes-kept-setuid-sticky-readonly",
        [
            [
                D("bin"),
                F("bin/su", b"su", 0o4755),
                F("bin/wall", b"w", 0o2755),
                D("tmp", 0o1777),
                F("secret", b"s", 0o600),
                D("ro", 0o555),
                F("ro/inside", b"i", 0o444),
            ]
        ],
        {
            "bin": DIR,
            "bin/su": ("file", b"su", 0o4755),
            "bin/wall": ("file", b"w", 0o2755),
            "tmp": ("dir", 0o1777),
            "secret": ("file", b"s", 0o600),
            "ro": ("dir", 0o555),
            "ro/inside": ("file", b"i", 0o444),
        },
    ),
    (
        "aufs-metadata-skipped",
        [[D(".wh..wh.plnk"), F(".wh..wh.plnk/1.2", b"x"), F(".wh..wh.aufs")]],
        {},
    ),
    (
        "root-entry-and-dot-slash-names",
        [[D("./", 0o700), F("./etc/hostname", b"h")]],
        {"etc": DIR, "etc/hostname": ("file", b"h", 0o644)},
    ),
    (
        "parent-folders-created",
        [[F("a/b/c/file", b"deep")]],
        {
            "a": DIR,
            "a/b": DIR,
            "a/b/c": DIR,
            "a/b/c/file": ("file", b"deep", 0o644),
        },
    ),
]


@pytest.mark.parametrize(
    "layers, expected", [c[1:] for c in SEMANTICS], ids=[c[0] for c in SEMANTICS]
)
def test_layers_apply_like_the_spec_says(tmp_path, layers, expected):
    apply(tmp_path / "root", *layers)
    assert snapshot(tmp_path / "root") == expected


def test_hard_link_shares_the_inode(tmp_path):
    root = tmp_path / "root"
    apply(root, [F("etc/passwd", b"root:x:0:0\n"), H("copy", "/etc/passwd")])
    assert os.path.samefile(root / "copy", root / "etc/passwd")
    assert (root / "copy").stat().st_nlink == 2


def test_hard_link_to_a_lower_layer_file(tmp_path):
    root = tmp_path / "root"
    apply(root, [F("bin/busybox", b"bb", 0o755)], [H("bin/sh", "bin/busybox")])
    assert os.path.samefile(root / "bin/sh", root / "bin/busybox")


@pytest.mark.skipif(not IS_ROOT, reason="owners are applied only as root")
def test_owners_are_kept_as_root(tmp_path):
    root = tmp_path / "root"
    apply(root, [D("home/u", 0o700, 1000, 1000), F("home/u/n", b"", 0o600, 1000, 100)])
    assert (root / "home/u").stat().st_uid == 1000
    assert ((root / "home/u/n").stat().st_uid, (root / "home/u/n").stat().st_gid) == (
        1000,
        100,
    )
    assert stat.S_IMODE((root / "home/u").stat().st_mode) == 0o700


@pytest.mark.skipif(not IS_ROOT, reason="device nodes need root")
def test_fifo_and_devices_made_as_root(tmp_path):
    root = tmp_path / "root"
    apply(root, [FIFO("run/fifo"), CHR("dev/null", 1, 3)])
    assert stat.S_ISFIFO((root / "run/fifo").lstat().st_mode)
    info = (root / "dev/null").lstat()
    assert stat.S_ISCHR(info.st_mode)
    assert (os.major(info.st_rdev), os.minor(info.st_rdev)) == (1, 3)


def test_devices_skipped_with_a_log_line_when_not_root(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    caplog.set_level(logging.INFO, logger="dgetkit")
    root = tmp_path / "root"
    (done,) = apply(root, [FIFO("run/fifo"), CHR("dev/null", 1, 3), F("etc/x", b"x")])
    assert done.skipped == ["run/fifo", "dev/null"]
    assert not (root / "run/fifo").exists() and not (root / "dev/null").exists()
    assert (root / "etc/x").read_bytes() == b"x"
    logged = [r.getMessage() for r in caplog.records]
    assert any("dev/null" in m and "skipped" in m for m in logged)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_compressed_layer_streams_are_sniffed(tmp_path, compression):
    raw = craft(F("etc/os-release", b"ID=test\n"))
    blob = {
        "gzip": lambda: gzip.compress(raw),
        "zstd": lambda: zstandard.ZstdCompressor().compress(raw),
        "none": lambda: raw,
    }[compression]()
    root = tmp_path / "root"
    root.mkdir()
    extract_layer(io.BytesIO(blob), root)
    assert (root / "etc/os-release").read_bytes() == b"ID=test\n"


# -- hostile layers ----------------------------------------------------------------

ESCAPE = S("esc", "../outside")

# (id, layers bottom first, the member the error must name)
HOSTILE = [
    ("dotdot-file", [[F("../outside/victim", b"pwned")]], "../outside/victim"),
    ("dotdot-inside-the-name", [[F("a/../../outside/new", b"x")]], "a/../../outside"),
    ("dotdot-folder", [[D("../outside/newdir")]], "../outside/newdir"),
    ("absolute-dotdot", [[F("/../outside/victim", b"x")]], "/../outside/victim"),
    (
        "symlink-then-file-through-it",
        [[ESCAPE, F("esc/victim", b"pwned")]],
        "esc/victim",
    ),
    (
        "symlink-then-file-next-layer",
        [[ESCAPE], [F("esc/new", b"pwned")]],
        "esc/new",
    ),
    (
        "deep-relative-symlink",
        [[D("a/b"), S("a/b/up", "../../../outside"), F("a/b/up/victim", b"x")]],
        "a/b/up/victim",
    ),
    (
        "absolute-symlink-with-dotdot",
        [[S("esc", "/../outside"), F("esc/victim", b"x")]],
        "esc/victim",
    ),
    (
        "symlink-chain",
        [[S("one", "two"), S("two", "../outside"), F("one/victim", b"x")]],
        "one/victim",
    ),
    ("symlink-loop", [[S("a", "b"), S("b", "a"), F("a/x", b"x")]], "a/x"),
    ("hard-link-to-host-passwd", [[H("passwd", "/etc/passwd")]], "passwd"),
    ("hard-link-dotdot", [[H("stolen", "../outside/victim")]], "stolen"),
    (
        "hard-link-through-absolute-symlink",
        [[S("hostetc", "/etc"), H("passwd", "hostetc/passwd")]],
        "passwd",
    ),
    (
        "hard-link-through-escaping-symlink",
        [[ESCAPE, H("stolen", "esc/victim")]],
        "stolen",
    ),
    (
        "whiteout-through-escaping-symlink",
        [[ESCAPE], [F("esc/.wh.victim")]],
        "esc/.wh.victim",
    ),
    ("whiteout-dotdot", [[F("../outside/.wh.victim")]], "../outside/.wh.victim"),
    (
        "opaque-through-escaping-symlink",
        [[ESCAPE], [F("esc/.wh..wh..opq")]],
        "esc/.wh..wh..opq",
    ),
]


@pytest.mark.parametrize(
    "layers, member", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_hostile_layers_are_refused(sandbox, layers, member):
    passwd = os.stat("/etc/passwd")
    with pytest.raises(UnsafeArchiveMember) as caught:
        apply(sandbox, *layers)
    assert repr(member)[:-1] in str(caught.value)
    assert f"layer {len(layers) - 1}" in str(caught.value)
    assert os.stat("/etc/passwd").st_nlink == passwd.st_nlink


# (id, layers, expected files inside the root) -- contained, so not refused
CONTAINED = [
    ("absolute-name", [[F("/etc/passwd", b"mine\n")]], {"etc/passwd": b"mine\n"}),
    (
        "absolute-symlink-rooted-in-the-image",
        [[S("hostetc", "/etc"), F("hostetc/passwd", b"mine\n")]],
        {"etc/passwd": b"mine\n"},
    ),
    (
        "symlink-up-to-the-root",
        [[D("a/b"), S("a/b/up", "../.."), F("a/b/up/top", b"t")]],
        {"top": b"t"},
    ),
    ("dotdot-that-stays-inside", [[F("a/../b", b"b")]], {"b": b"b"}),
    (
        "hard-link-absolute-target-inside",
        [[F("etc/passwd", b"p"), H("copy", "/etc/passwd")]],
        {"copy": b"p", "etc/passwd": b"p"},
    ),
]


@pytest.mark.parametrize(
    "layers, files", [c[1:] for c in CONTAINED], ids=[c[0] for c in CONTAINED]
)
def test_absolute_names_and_links_stay_inside(sandbox, layers, files):
    passwd = Path("/etc/passwd").read_bytes()
    apply(sandbox, *layers)
    for name, data in files.items():
        assert (sandbox / name).read_bytes() == data
    assert Path("/etc/passwd").read_bytes() == passwd


# -- whole images from the registry ------------------------------------------------


def test_extract_applies_whiteouts_of_a_pushed_image(registry, images, tmp_path):
    done = extract(
        f"{registry.host}/whiteout/layers:1", tmp_path / "rootfs", cache=tmp_path / "c"
    )
    root = done.folder
    assert done.layers == 2
    assert done.digest == images["whiteout/layers:1"]["digest"]
    assert (root / "etc/keep").read_bytes() == b"kept\n"
    assert not (root / "etc/old.conf").exists()
    assert sorted(os.listdir(root / "var/cache/app")) == ["fresh"]
    assert os.readlink(root / "usr/bin/tool-link") == "tool"
    assert os.path.samefile(root / "usr/bin/tool-hard", root / "usr/bin/tool")
    assert stat.S_IMODE((root / "usr/bin/tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "home/user").stat().st_mode) == 0o700
    if IS_ROOT:
        assert (root / "home/user/notes").stat().st_uid == 1000


def test_extract_matches_the_layer_files(registry, images, tmp_path):
    record = images["whiteout/layers:1"]
    expected = tmp_path / "expected"
    expected.mkdir()
    for layer in whiteout_layers():
        extract_layer(io.BytesIO(layer.data), expected)
    done = extract(f"{registry.host}/whiteout/layers:1", tmp_path / "got", cache=False)
    assert snapshot(done.folder) == snapshot(expected)
    assert record["diff_ids"] == [layer.diff_id for layer in whiteout_layers()]


@pytest.mark.parametrize(
    "reference, platform, path, content",
    [
        ("multi/oci:1", "linux/arm/v7", "etc/arch", b"linux/arm/v7\n"),
        ("multi/docker:1", "linux/arm64", "etc/arch", b"linux/arm64/v8\n"),
        ("single/oci-zstd:1", None, "etc/image", b"single/oci-zstd\n"),
        ("single/docker-plain:1", None, "etc/image", b"single/docker-plain\n"),
        ("dup/layer:1", None, "dup", b"the same layer twice\n"),
    ],
    ids=["oci-index-arm-v7", "docker-list-arm64", "zstd", "uncompressed", "dup"],
)
def test_extract_picks_platform_and_decompresses(
    registry, images, tmp_path, reference, platform, path, content
):
    done = extract(
        f"{registry.host}/{reference}",
        tmp_path / "rootfs",
        platform=platform,
        cache=tmp_path / "cache",
    )
    assert (done.folder / path).read_bytes() == content


def test_extract_refuses_a_folder_with_files(registry, images, tmp_path):
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "rootfs" / "mine").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        extract(f"{registry.host}/dup/layer:1", tmp_path / "rootfs", cache=False)
    assert os.listdir(tmp_path / "rootfs") == ["mine"]


def _push_raw_layers(registry, repository, raws) -> str:
    layers = [
        Layer(sha256_digest(raw), len(raw), sha256_digest(raw), "none", data=raw)
        for raw in raws
    ]
    Pusher(registry.url).push_image(repository, "1", layers, make_config(layers))
    return f"{registry.host}/{repository}:1"


def test_hostile_image_leaves_nothing_behind(registry, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    reference = _push_raw_layers(
        registry,
        "hostile/escape",
        [craft(F("etc/ok", b"ok")), craft(S("esc", "../../outside"), F("esc/x", b"x"))],
    )
    with pytest.raises(UnsafeArchiveMember, match="esc/x") as caught:
        extract(reference, tmp_path / "rootfs", cache=False)
    assert "layer 1 (sha256:" in str(caught.value)
    assert not (tmp_path / "rootfs").exists()
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside"]


def test_extract_is_reachable_from_the_package():
    assert dgetkit.extract is extract


# -- a real Debian root filesystem -------------------------------------------------


def _apt_mirror() -> str | None:
    """The Debian mirror apt uses here, from sources.list(.d)."""
    for path in [
        Path("/etc/apt/sources.list"),
        *Path("/etc/apt/sources.list.d").glob("*"),
    ]:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if line.startswith("URIs:") and "security" not in line:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    return None


@pytest.fixture(scope="module")
def debian_rootfs(tmp_path_factory):
    """``debootstrap --variant=minbase bookworm`` into a temporary folder."""
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (apt-get install debootstrap)")
    if not IS_ROOT:
        pytest.skip("debootstrap needs root")
    mirror = _apt_mirror()
    if mirror is None:
        pytest.skip("no Debian mirror in /etc/apt/sources.list(.d)")
    target = tmp_path_factory.mktemp("debian") / "rootfs"
    done = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(target), mirror],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-1500:]
        pytest.skip(f"debootstrap could not reach the mirror {mirror}: {tail}")
    return target


def _tar_layer(source: Path, out: Path) -> Layer:
    """A layer of ``source`` made by GNU tar, as image builders do."""
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(source), "-cf", str(out), "."],
        check=True,
    )
    digest = hashlib.sha256()
    with open(out, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    value = "sha256:" + digest.hexdigest()
    return Layer(value, out.stat().st_size, value, "none", path=out)


def _inventory(root: Path) -> dict:
    """Kind, mode, owner, size or link target of every path; hard-link groups."""
    found, inodes = {}, {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            relative = str(path.relative_to(root))
            kind = stat.S_IFMT(info.st_mode)
            detail = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
            if stat.S_ISREG(info.st_mode):
                detail = info.st_size
                if info.st_nlink > 1:
                    inodes.setdefault(info.st_ino, []).append(relative)
            found[relative] = (
                kind,
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                detail,
            )
    links = sorted(sorted(group) for group in inodes.values())
    return {"paths": found, "hard_links": links}


@pytest.mark.slow
def test_debian_root_filesystem_round_trip(registry, debian_rootfs, tmp_path):
    """debootstrap → GNU tar layer (+ a whiteout layer) → registry → extract."""
    base = _tar_layer(debian_rootfs, tmp_path / "base.tar")
    top_raw = craft(
        F("usr/share/doc/.wh..wh..opq"),
        F("etc/.wh.motd"),
        F("etc/dgetkit", b"extracted\n"),
    )
    top = Layer(
        sha256_digest(top_raw),
        len(top_raw),
        sha256_digest(top_raw),
        "none",
        data=top_raw,
    )
    Pusher(registry.url).push_image(
        "debian/minbase", "bookworm", [base, top], make_config([base, top])
    )
    done = extract(
        f"{registry.host}/debian/minbase:bookworm",
        tmp_path / "rootfs",
        cache=tmp_path / "cache",
    )

    expected = _inventory(debian_rootfs)
    del expected["paths"]["etc/motd"]
    for path in list(expected["paths"]):
        if path.startswith("usr/share/doc/"):
            del expected["paths"][path]
    expected["hard_links"] = [
        group
        for group in expected["hard_links"]
        if not any(p.startswith("usr/share/doc/") for p in group)
    ]
    got = _inventory(done.folder)
    assert got["paths"].pop("etc/dgetkit")[4] == len(b"extracted\n")
    assert got == expected
    assert len(expected["paths"]) > 5000
    assert os.readlink(done.folder / "bin") == "usr/bin"  # merged /usr
    assert stat.S_IMODE((done.folder / "usr/bin/su").stat().st_mode) == 0o4755
    assert (done.folder / "etc/debian_version").read_text().startswith("12")
