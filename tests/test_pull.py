"""The core pull against real registries, checked by real loaders.

Every archive written here is loaded by ``podman load`` and read by
``skopeo inspect docker-archive:``; what they report is compared with what
the test pushed.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

import dgetkit
from dgetkit import cli
from dgetkit.errors import (
    AuthenticationError,
    InvalidReference,
    ManifestNotFound,
    OutputError,
    PlatformNotFound,
    RepositoryNotFound,
)
from tests.support.loaders import podman_inspect, podman_load, skopeo_inspect

pytestmark = pytest.mark.integration

HOST_ARCH = dgetkit.Platform.host().architecture

# (reference in the catalogue, platform asked for, platform of the image got)
PULLS = [
    ("multi/oci:1", "linux/amd64", "linux/amd64"),
    ("multi/oci:1", "linux/arm64", "linux/arm64/v8"),
    ("multi/oci:1", "linux/arm/v7", "linux/arm/v7"),
    ("multi/oci:1", "linux/arm/v6", "linux/arm/v6"),
    ("multi/docker:1", "linux/aarch64", "linux/arm64/v8"),
    ("multi/docker:1", "linux/arm", "linux/arm/v7"),
    ("single/oci-gzip:1", None, None),
    ("single/oci-zstd:1", None, None),
    ("single/oci-plain:1", None, None),
    ("single/docker-gzip:1", None, None),
    ("single/docker-plain:1", None, None),
    ("dup/layer:1", None, None),
    ("a/b/c/deep:1", None, None),
    ("history/empty:1", None, None),
    ("whiteout/layers:1", None, None),
    ("mislabel/media:1", None, None),
    ("foreign/urls:1", None, None),
]


def record_for(images, reference, platform):
    record = images[reference]
    if platform:
        return record["platforms"][platform]
    return record


def pull_quietly(reference, path, **kwargs):
    kwargs.setdefault("progress", False)
    return dgetkit.pull(reference, path, **kwargs)


def member_bytes(archive, name):
    with tarfile.open(archive) as tar:
        member = tar.getmember(name)
        if member.issym():
            target = f"{name.rsplit('/', 2)[0]}/{member.linkname}"
            member = tar.getmember(tarfile.os.path.normpath(target))
        return tar.extractfile(member).read()


def check_archive(path, record, name):
    """The archive's manifest and layers match what was pushed."""
    with tarfile.open(path) as tar:
        names = tar.getnames()
        (item,) = json.loads(tar.extractfile("manifest.json").read())
    assert all(not n.startswith(("/", "./")) and ".." not in n for n in names)
    assert item["RepoTags"] == ([name] if name else [])
    assert item["Config"] == record["config_digest"].split(":")[1] + ".json"
    assert member_bytes(path, item["Config"]) == record["config"]
    assert len(item["Layers"]) == len(record["diff_ids"])
    for layer, diff_id in zip(item["Layers"], record["diff_ids"]):
        data = member_bytes(path, layer)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id


def check_loaded(path, record, name, loader_dir):
    loaded = podman_load(path, loader_dir)
    image_id = record["config_digest"].split(":")[1]
    assert loaded == [name] if name else image_id in loaded[0]
    inspected = podman_inspect(name or image_id, loader_dir)
    config = json.loads(record["config"])
    assert inspected["Architecture"] == config["architecture"]
    assert inspected["RootFS"]["Layers"] == record["diff_ids"]
    assert inspected["Id"] == record["config_digest"].split(":")[1]
    skopeo = skopeo_inspect(path)
    assert skopeo["Architecture"] == config["architecture"]
    assert skopeo["Layers"] == record["diff_ids"]


@pytest.mark.parametrize(
    "reference, platform, got", PULLS, ids=[f"{p[0]}-{p[1]}" for p in PULLS]
)
def test_pull_loads_in_podman(
    registry, images, tmp_path, loader_dir, reference, platform, got
):
    record = record_for(images, reference, got)
    path = tmp_path / "out.tar"
    result = pull_quietly(
        f"{registry.host}/{reference}", path, platform=platform, cache=tmp_path / "c"
    )
    name = f"{registry.host}/{reference}"
    assert result.path == path and result.bytes == path.stat().st_size
    assert result.digest == record["digest"]
    assert result.image_id == record["config_digest"]
    check_archive(path, record, name)
    check_loaded(path, record, name, loader_dir)


def test_default_platform_is_this_machine(registry, images, tmp_path):
    result = pull_quietly(
        f"{registry.host}/multi/oci:1", tmp_path / "a.tar", cache=False
    )
    assert result.images[0].platform.split("/")[1] == HOST_ARCH


def test_digest_pin_writes_no_tag(registry, images, tmp_path, loader_dir):
    record = images["multi/oci:1"]["platforms"]["linux/arm/v7"]
    path = tmp_path / "pinned.tar"
    pull_quietly(f"{registry.host}/multi/oci@{record['digest']}", path, cache=False)
    check_archive(path, record, None)
    check_loaded(path, record, None, loader_dir)


def test_index_digest_with_platform(registry, images, tmp_path):
    index = images["multi/docker:1"]
    result = pull_quietly(
        f"{registry.host}/multi/docker:1@{index['digest']}",
        tmp_path / "x.tar",
        platform="linux/arm/v6",
        cache=False,
    )
    assert result.digest == index["platforms"]["linux/arm/v6"]["digest"]
    assert result.images[0].index_digest == index["digest"]


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz"])
def test_gzip_archive_by_name(registry, images, tmp_path, suffix):
    record = images["multi/oci:1"]["platforms"]["linux/arm64/v8"]
    path = tmp_path / f"out{suffix}"
    pull_quietly(
        f"{registry.host}/multi/oci:1", path, platform="linux/arm64", cache=False
    )
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    check_archive(path, record, f"{registry.host}/multi/oci:1")


def test_compressed_layers_load(registry, images, tmp_path, loader_dir):
    record = images["single/oci-zstd:1"]
    path = tmp_path / "c.tar"
    pull_quietly(
        f"{registry.host}/single/oci-zstd:1", path, compressed_layers=True, cache=False
    )
    with tarfile.open(path) as tar:
        (item,) = json.loads(tar.extractfile("manifest.json").read())
    assert all(layer.endswith(".tar.zst") for layer in item["Layers"])
    check_loaded(path, record, f"{registry.host}/single/oci-zstd:1", loader_dir)


def test_repeated_layer_is_stored_once(registry, images, tmp_path):
    path = tmp_path / "dup.tar"
    pull_quietly(f"{registry.host}/dup/layer:1", path, cache=False)
    with tarfile.open(path) as tar:
        (item,) = json.loads(tar.extractfile("manifest.json").read())
        layers = [tar.getmember(name) for name in item["Layers"]]
    assert len(set(item["Layers"])) == 2
    assert [m.isfile() for m in layers] == [True, False]
    assert layers[1].issym()


def test_second_pull_uses_the_cache(registry, images, tmp_path, fault_proxy):
    proxy = fault_proxy()
    reference = f"{proxy.host}/single/oci-gzip:1"
    pull_quietly(reference, tmp_path / "1.tar", cache=tmp_path / "cache")
    first = proxy.blob_bytes()
    pull_quietly(reference, tmp_path / "2.tar", cache=tmp_path / "cache")
    config = len(images["single/oci-gzip:1"]["config"])
    assert first > config
    assert proxy.blob_bytes() == first + config  # only the config was asked again


def test_refuses_to_overwrite(registry, images, tmp_path):
    path = tmp_path / "exists.tar"
    path.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        pull_quietly(f"{registry.host}/single/oci-gzip:1", path, cache=False)
    assert path.read_bytes() == b"precious"
    pull_quietly(
        f"{registry.host}/single/oci-gzip:1", path, cache=False, overwrite=True
    )
    assert tarfile.is_tarfile(path)


ERRORS = [
    ("multi/oci:1", "linux/s390x", PlatformNotFound, "linux/arm/v6"),
    ("multi/oci:1", "linux/arm/v5", PlatformNotFound, "linux/arm64"),
    ("single/oci-gzip:1", "linux/arm64", PlatformNotFound, "single-platform"),
    ("single/oci-gzip:nope", None, ManifestNotFound, "not found"),
    ("no/such-repo:1", None, RepositoryNotFound, "does not exist"),
]


@pytest.mark.parametrize(
    "reference, platform, error, words", ERRORS, ids=[f"{e[0]}-{e[1]}" for e in ERRORS]
)
def test_errors_name_what_is_wrong(
    registry, images, tmp_path, reference, platform, error, words
):
    path = tmp_path / "never.tar"
    with pytest.raises(error, match=words):
        pull_quietly(
            f"{registry.host}/{reference}", path, platform=platform, cache=False
        )
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_attestations_are_never_chosen(registry, images):
    index = dgetkit.resolve(
        f"{registry.host}/multi/oci:1", platform="linux/amd64"
    ).index
    attestations = [d for d in index.manifests if d.is_attestation]
    assert [str(d.digest) for d in attestations] == images["multi/oci:1"][
        "attestations"
    ]
    with pytest.raises(PlatformNotFound) as caught:
        dgetkit.resolve(f"{registry.host}/multi/oci:1", platform="unknown/unknown")
    assert "unknown" not in str(caught.value).split("has:")[1]


# -- authentication ----------------------------------------------------------------


@pytest.fixture(scope="module")
def token_images(token_registry):
    from tests.support.images import Pusher, make_config, make_layer, push_recorded

    pusher = Pusher(
        token_registry.url,
        auth=(token_registry.username, token_registry.password),
        verify=token_registry.ca_cert,
    )
    layers = [make_layer({"etc/secret": b"private\n"})]
    config = make_config(layers)
    return {
        repo: push_recorded(pusher, repo, "1", layers, config)
        for repo in ("public/app", "private/app")
    }


def test_token_auth_anonymous_public(
    token_registry, token_images, tmp_path, loader_dir
):
    name = f"{token_registry.host}/public/app:1"
    pull_quietly(
        name, tmp_path / "p.tar", ca_cert=str(token_registry.ca_cert), cache=False
    )
    check_loaded(tmp_path / "p.tar", token_images["public/app"], name, loader_dir)


def test_token_auth_private_needs_login(token_registry, token_images, tmp_path):
    name = f"{token_registry.host}/private/app:1"
    ca = str(token_registry.ca_cert)
    with pytest.raises(AuthenticationError, match="--username"):
        pull_quietly(name, tmp_path / "x.tar", ca_cert=ca, cache=False)
    with pytest.raises(AuthenticationError, match="check the user name"):
        pull_quietly(
            name,
            tmp_path / "x.tar",
            ca_cert=ca,
            cache=False,
            username=token_registry.username,
            password="wrong",
        )
    result = pull_quietly(
        name,
        tmp_path / "x.tar",
        ca_cert=ca,
        cache=False,
        username=token_registry.username,
        password=token_registry.password,
    )
    assert result.image_id == token_images["private/app"]["config_digest"]


def test_basic_auth(basic_registry, tmp_path):
    from tests.support.images import Pusher, make_config, make_layer, push_recorded

    pusher = Pusher(
        basic_registry.url, auth=(basic_registry.username, basic_registry.password)
    )
    layers = [make_layer({"basic": b"auth\n"})]
    record = push_recorded(pusher, "basic/app", "1", layers, make_config(layers))
    name = f"{basic_registry.host}/basic/app:1"
    with pytest.raises(AuthenticationError):
        pull_quietly(name, tmp_path / "b.tar", cache=False)
    with pytest.raises(AuthenticationError):
        pull_quietly(
            name,
            tmp_path / "b.tar",
            cache=False,
            username=basic_registry.username,
            password="nope",
        )
    result = pull_quietly(
        name,
        tmp_path / "b.tar",
        cache=False,
        username=basic_registry.username,
        password=basic_registry.password,
    )
    assert result.image_id == record["config_digest"]


# -- the command line ----------------------------------------------------------------


def test_cli_pull(registry, images, tmp_path, capsys, loader_dir):
    out = tmp_path / "cli.tar"
    code = cli.main(
        [
            "pull",
            f"{registry.host}/multi/oci:1",
            "--platform",
            "linux/arm64",
            "-o",
            str(out),
            "--no-progress",
            "--no-cache",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    record = images["multi/oci:1"]["platforms"]["linux/arm64/v8"]
    assert record["digest"] in printed and str(out) in printed
    check_loaded(out, record, f"{registry.host}/multi/oci:1", loader_dir)


CLI_ERRORS = [
    (["pull", "Bad/Name"], 2, "lower case"),
    (["pull", "HOST/multi/oci:1", "--platform", "linux/s390x"], 1, "linux/arm/v7"),
    (["pull", "HOST/multi/oci:1", "-o", "/no/such/folder/x.tar"], 1, "does not exist"),
    (["pull", "HOST/nothing/here:1"], 1, "does not exist"),
    (["pull", "127.0.0.1:9/x/y:1"], 1, "cannot reach"),
]


@pytest.mark.parametrize(
    "argv, code, words",
    CLI_ERRORS,
    ids=[" ".join(c[0][1:2]) + str(i) for i, c in enumerate(CLI_ERRORS)],
)
def test_cli_errors_without_traceback(
    registry, images, capsys, tmp_path, monkeypatch, argv, code, words
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("dgetkit.registry.sleep", lambda s: None)
    argv = [a.replace("HOST", registry.host) for a in argv] + ["--no-progress"]
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_invalid_reference_is_a_value_error():
    with pytest.raises(InvalidReference):
        dgetkit.pull("ns/UPPER:case", progress=False)
    with pytest.raises(ValueError):
        dgetkit.pull("x@sha256:123", progress=False)


def test_pull_imports_no_pandas():
    import subprocess
    import sys

    code = (
        "import sys, dgetkit.cli, dgetkit.pull; print('pandas' in sys.modules, "
        "'ipywidgets' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_member_bytes_roundtrip(tmp_path):
    # the helper above follows the symlinks the writer makes for repeated layers
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("a/layer.tar")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("b/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, "../a/layer.tar"
        tar.addfile(link)
    assert member_bytes(path, "b/layer.tar") == b"abc"


LOOKS = [
    (["platforms", "HOST/multi/oci:1"], ["linux/arm/v6", "True"]),
    (["layers", "HOST/history/empty:1"], ["COPY first /", "COPY second /"]),
    (["history", "HOST/history/empty:1"], ["ENV GREETING=hello", "True"]),
    (["tags", "HOST/tags/many"], ["t00", "t24"]),
]


@pytest.mark.parametrize("argv, words", LOOKS, ids=[c[0][0] for c in LOOKS])
def test_cli_looks_before_pulling(registry, images, capsys, argv, words):
    argv = [a.replace("HOST", registry.host) for a in argv]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert all(w in out for w in words)


MORE_CLI_ERRORS = [
    (["pull", "--from-file", "refs.txt", "HOST/multi/oci:1"], "not both"),
    (["pull", "--from-file", "refs.txt", "-o", "x.tar"], "names a folder"),
    (
        ["pull", "HOST/multi/oci:1", "--username", "u", "--password-stdin"],
        "no password",
    ),
    (["pull", "HOST/multi/oci:1", "--platform", "linux"], "only an operating system"),
    (["pull", "http://HOST/multi/oci:1"], "leave out the scheme"),
    (["pull", "HOST/multi/oci:1", "--jobs", "0"], "jobs"),
    (["cache", "prune", "--older-than", "-1"], "0 or more"),
]


@pytest.mark.parametrize(
    "argv, words", MORE_CLI_ERRORS, ids=[c[1] for c in MORE_CLI_ERRORS]
)
def test_cli_refuses_bad_usage(
    registry, images, capsys, tmp_path, monkeypatch, argv, words
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    (tmp_path / "refs.txt").write_text(f"{registry.host}/multi/oci:1\n")
    argv = [a.replace("HOST", registry.host) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_archive_is_readable_by_others_and_refs_are_deduplicated(
    registry, images, tmp_path
):
    import stat

    path = tmp_path / "both.tar"
    reference = f"{registry.host}/single/oci-gzip:1"
    result = pull_quietly([reference, reference], path, cache=False)
    assert len(result.images) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_refused_connection_is_not_retried(tmp_path, monkeypatch):
    waited = []
    monkeypatch.setattr("dgetkit.registry.sleep", waited.append)
    with pytest.raises(dgetkit.errors.RegistryUnreachable, match="is the registry"):
        pull_quietly("127.0.0.1:9/x/y:1", tmp_path / "x.tar")
    assert waited == []


def test_login_after_a_refusal_is_seen(token_registry, token_images, tmp_path):
    import base64
    import os

    name = f"{token_registry.host}/private/app:1"
    options = dgetkit.Options(ca_cert=str(token_registry.ca_cert))
    with pytest.raises(AuthenticationError):
        dgetkit.resolve(name, options=options)
    pair = f"{token_registry.username}:{token_registry.password}".encode()
    folder = os.environ["DOCKER_CONFIG"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as config:
        json.dump(
            {"auths": {token_registry.host: {"auth": base64.b64encode(pair).decode()}}},
            config,
        )
    image = dgetkit.resolve(name, options=options)  # the same options, a new login
    assert str(image.config.digest) == token_images["private/app"]["config_digest"]


def test_insecure_skips_verification_quietly(token_registry, token_images, tmp_path):
    import warnings

    argv = ["pull", f"{token_registry.host}/public/app:1", "--insecure"]
    argv += ["--no-progress", "--no-cache", "-o", str(tmp_path / "i.tar")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(argv) == 0
    assert [w for w in caught if "Unverified HTTPS" in str(w.message)] == []
