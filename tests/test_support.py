"""Tests of the test infrastructure itself (no dgetkit import).

Each test proves that a piece of ``tests/support`` really does what other
tests rely on: the registries answer and enforce auth, pushed images read
back with matching digests, each proxy fault is visible to a plain HTTP
client, and the real loaders accept what we build.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import time

import jwt
import pytest
import requests
import zstandard

from tests.support import faultproxy, loaders
from tests.support.faultproxy import BLOB_PATH, FaultProxy
from tests.support.images import (
    DOCKER_FOREIGN,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    IN_TOTO,
    OCI_INDEX,
    OCI_MANIFEST,
    SINGLE_IMAGES,
    STANDARD_PLATFORMS,
    File,
    Pusher,
    Symlink,
    make_config,
    make_large_layer,
    make_layer,
    make_tar,
    parse_challenge,
    platform_string,
)
from tests.support.tokenserver import parse_scope

pytestmark = pytest.mark.integration

ACCEPT_ALL = f"{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_LIST}, {DOCKER_MANIFEST}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def get_manifest(server, repository, reference, **kwargs) -> requests.Response:
    url = f"{server.url}/v2/{repository}/manifests/{reference}"
    headers = {"Accept": ACCEPT_ALL} | kwargs.pop("headers", {})
    return requests.get(url, headers=headers, verify=server.verify, **kwargs)


def blob_url(server, repository, digest) -> str:
    return f"{server.url}/v2/{repository}/blobs/{digest}"


def decompress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


# -- registries and auth --------------------------------------------------------


def test_plain_registry_answers(registry):
    response = requests.get(registry.url + "/v2/", timeout=5)

    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert registry.url == f"http://{registry.host}"
    assert registry.ca_cert is None


def test_basic_registry_requires_credentials(basic_registry):
    url = basic_registry.url + "/v2/"
    login = (basic_registry.username, basic_registry.password)

    anonymous = requests.get(url, timeout=5)
    wrong = requests.get(url, auth=(basic_registry.username, "nope"), timeout=5)
    right = requests.get(url, auth=login, timeout=5)

    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert wrong.status_code == 401
    assert right.status_code == 200


def test_basic_registry_push_and_pull(basic_registry):
    login = (basic_registry.username, basic_registry.password)
    layer = make_layer({"basic": b"auth\n"})
    pushed = Pusher(basic_registry.url, auth=login).push_image(
        "basic/x", "1", [layer], make_config([layer])
    )

    response = get_manifest(basic_registry, "basic/x", "1", auth=login)

    assert sha256(response.content) == pushed["digest"]


@pytest.fixture(scope="module")
def token_images(token_registry):
    """One public and one private image on the token registry."""
    login = (token_registry.username, token_registry.password)
    pusher = Pusher(token_registry.url, auth=login, verify=token_registry.ca_cert)
    layer = make_layer({"token": b"auth\n"})
    config = make_config([layer])
    return {
        repository: pusher.push_image(repository, "1", [layer], config)
        for repository in ("public/hello", "private/secret")
    }


def challenge_token(registry, response, auth=None) -> str:
    scheme, params = parse_challenge(response.headers["WWW-Authenticate"])
    assert scheme == "bearer"
    answer = requests.get(
        params["realm"],
        params={"service": params["service"], "scope": params["scope"]},
        auth=auth,
        verify=registry.verify,
        timeout=5,
    )
    assert answer.status_code == 200
    return answer.json()["token"]


def test_token_registry_anonymous_pull_of_public_repository(
    token_registry, token_images, token_server
):
    first = get_manifest(token_registry, "public/hello", "1")
    token = challenge_token(token_registry, first)
    second = get_manifest(
        token_registry,
        "public/hello",
        "1",
        headers={"Authorization": f"Bearer {token}"},
    )

    assert first.status_code == 401
    assert second.status_code == 200
    assert sha256(second.content) == token_images["public/hello"]["digest"]
    assert [r.has_credentials for r in token_server.requests] == [False]


def test_token_registry_private_repository_needs_login(
    token_registry, token_images, token_server
):
    login = (token_registry.username, token_registry.password)
    first = get_manifest(token_registry, "private/secret", "1")
    anonymous = challenge_token(token_registry, first)
    logged_in = challenge_token(token_registry, first, auth=login)

    refused = get_manifest(
        token_registry,
        "private/secret",
        "1",
        headers={"Authorization": f"Bearer {anonymous}"},
    )
    allowed = get_manifest(
        token_registry,
        "private/secret",
        "1",
        headers={"Authorization": f"Bearer {logged_in}"},
    )

    assert refused.status_code == 401
    assert allowed.status_code == 200
    assert jwt.decode(anonymous, options={"verify_signature": False})["access"] == []


def test_token_server_refuses_wrong_password(token_registry, token_server):
    answer = requests.get(
        token_server.realm,
        params={"service": token_server.service, "scope": "repository:a/b:pull"},
        auth=(token_registry.username, "wrong"),
        verify=token_registry.verify,
        timeout=5,
    )

    assert answer.status_code == 401
    assert token_server.requests[-1].has_credentials
    assert "wrong" not in repr(token_server.requests)


def test_token_claims_and_header(token_registry, token_server):
    token_server.token_keys = ("access_token",)
    answer = requests.get(
        token_server.realm,
        params={
            "service": token_server.service,
            "scope": ["repository:lib/x:pull,push", "repository:private/y:pull"],
        },
        verify=token_registry.verify,
        timeout=5,
    ).json()

    token = answer["access_token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})

    assert "token" not in answer
    assert header == {"alg": "RS256", "kid": token_server.kid, "typ": "JWT"}
    assert claims["aud"] == token_server.service
    assert claims["iss"] == token_server.issuer
    assert claims["access"] == [
        {"type": "repository", "name": "lib/x", "actions": ["pull"]}
    ]


def test_short_token_expiry_makes_the_registry_answer_401(
    token_registry, token_images, token_server
):
    token_server.expires_in = 1
    first = get_manifest(token_registry, "public/hello", "1")
    token = challenge_token(token_registry, first)
    auth = {"Authorization": f"Bearer {token}"}

    fresh = get_manifest(token_registry, "public/hello", "1", headers=auth)
    time.sleep(2.1)
    stale = get_manifest(token_registry, "public/hello", "1", headers=auth)

    assert (fresh.status_code, stale.status_code) == (200, 401)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("repository:a/b:pull", ("repository", "a/b", ["pull"])),
        ("repository:a/b:pull,push", ("repository", "a/b", ["pull", "push"])),
        ("registry:catalog:*", ("registry", "catalog", ["*"])),
        ("garbage", None),
    ],
    ids=["pull", "pull-push", "catalog", "garbage"],
)
def test_parse_scope(scope, expected):
    assert parse_scope(scope) == expected


def test_libtrust_key_id_shape(token_registry):
    kid = token_registry.token_server.kid
    groups = kid.split(":")

    assert len(groups) == 12
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")  # base32, no padding
    assert all(len(group) == 4 and set(group) <= alphabet for group in groups)


# -- images ----------------------------------------------------------------------


SINGLE = sorted(SINGLE_IMAGES)


@pytest.mark.parametrize("repository", SINGLE, ids=SINGLE)
def test_pushed_image_reads_back(registry, images, repository):
    record = images[f"{repository}:1"]
    manifest = get_manifest(registry, repository, "1")
    body = manifest.json()
    config = requests.get(blob_url(registry, repository, record["config_digest"]))

    assert sha256(manifest.content) == record["digest"]
    assert manifest.headers["Content-Type"] == record["media_type"]
    assert json.loads(config.content)["rootfs"]["diff_ids"] == record["diff_ids"]
    for descriptor, layer in zip(body["layers"], record["layers"], strict=True):
        blob = requests.get(blob_url(registry, repository, descriptor["digest"]))
        assert sha256(blob.content) == descriptor["digest"] == layer.digest
        assert sha256(decompress(blob.content, layer.compression)) == layer.diff_id


@pytest.mark.parametrize("reference", ["multi/oci:1", "multi/docker:1"])
def test_multi_platform_index(registry, images, reference):
    record = images[reference]
    repository, tag = reference.split(":")
    index = get_manifest(registry, repository, tag).json()
    platforms = [
        platform_of(entry["platform"])
        for entry in index["manifests"]
        if "vnd.docker.reference.type" not in entry.get("annotations", {})
    ]

    assert platforms == list(STANDARD_PLATFORMS)
    assert set(record["platforms"]) == set(platforms)
    assert len(record["attestations"]) == (4 if record["kind"] == "oci" else 0)
    arches = {p: r["layer_digests"][1] for p, r in record["platforms"].items()}
    assert len(set(arches.values())) == 4


def platform_of(platform: dict) -> str:
    return platform_string(
        platform["architecture"], platform["os"], platform.get("variant")
    )


def test_attestation_entries(registry, images):
    index = get_manifest(registry, "multi/oci", "1").json()
    attestations = index["manifests"][4:]
    children = {entry["digest"] for entry in index["manifests"][:4]}

    for entry in attestations:
        annotations = entry["annotations"]
        manifest = get_manifest(registry, "multi/oci", entry["digest"]).json()
        assert entry["platform"] == {"architecture": "unknown", "os": "unknown"}
        assert annotations["vnd.docker.reference.type"] == "attestation-manifest"
        assert annotations["vnd.docker.reference.digest"] in children
        assert manifest["layers"][0]["mediaType"] == IN_TOTO


def test_catalogue_special_cases(registry, images):
    dup = images["dup/layer:1"]
    history = json.loads(images["history/empty:1"]["config"])["history"]
    tags = requests.get(registry.url + "/v2/tags/many/tags/list").json()["tags"]
    whiteouts = images["whiteout/layers:1"]["layers"][1].names
    mislabelled = get_manifest(registry, "mislabel/media", "1").json()["layers"][0]

    assert dup["layer_digests"][0] == dup["layer_digests"][1]
    assert [bool(step.get("empty_layer")) for step in history].count(True) == 3
    assert sorted(tags) == images["tags/many"]["tags"] and len(tags) == 25
    assert {"etc/.wh.old.conf", "var/cache/app/.wh..wh..opq"} <= set(whiteouts)
    assert mislabelled["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert get_manifest(registry, "a/b/c/deep", "1").status_code == 200


def test_foreign_layer_url_serves_the_blob(registry, images):
    record = images["foreign/urls:1"]
    manifest = get_manifest(registry, "foreign/urls", "1").json()
    foreign = manifest["layers"][1]

    assert foreign["mediaType"] == DOCKER_FOREIGN
    assert foreign["urls"] == [record["foreign_urls"][foreign["digest"]]]
    assert sha256(requests.get(foreign["urls"][0]).content) == foreign["digest"]


def test_layers_are_deterministic():
    files = {"b": b"2", "a/x": File(b"1", mode=0o600), "l": Symlink("b")}

    first, second = make_layer(files), make_layer(dict(reversed(files.items())))

    assert first.digest == second.digest
    assert first.names == ("a", "a/x", "b", "l")


def test_large_layer_streams_to_disk(tmp_path):
    layer = make_large_layer(tmp_path / "big.tar.gz", 3 << 20, seed=7)
    data = layer.path.read_bytes()
    raw = gzip.decompress(data)

    assert (sha256(data), len(data)) == (layer.digest, layer.size)
    assert sha256(raw) == layer.diff_id
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getmembers()[0].size == 3 << 20
    assert layer.size < 3 << 20


def test_mirror_registry_pulls_through(registry, images, registry_factory):
    mirror = registry_factory(proxy_remote=registry.url)

    response = get_manifest(mirror, "multi/oci", "1")

    assert sha256(response.content) == images["multi/oci:1"]["digest"]


# -- fault proxy ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def blob(registry):
    """A 256 KiB blob in ``registry`` as (repository, digest, data)."""
    data = bytes(range(256)) * 1024
    return "proxy/blob", Pusher(registry.url).push_blob("proxy/blob", data), data


def proxied_blob(proxy: FaultProxy, blob) -> str:
    repository, digest, _ = blob
    return blob_url(proxy, repository, digest)


def test_proxy_passes_range_through_and_counts_bytes(fault_proxy, blob):
    proxy = fault_proxy()

    whole = requests.get(proxied_blob(proxy, blob), timeout=5)
    tail = requests.get(
        proxied_blob(proxy, blob), headers={"Range": "bytes=1000-"}, timeout=5
    )

    assert whole.content == blob[2]
    assert tail.status_code == 206
    assert tail.content == blob[2][1000:]
    assert proxy.blob_bytes() == 2 * len(blob[2]) - 1000
    assert proxy.blob_bytes([blob[1]]) == proxy.blob_bytes()
    assert proxy.blob_bytes(["sha256:" + "0" * 64]) == 0
    assert [r.range for r in proxy.requests] == [None, "bytes=1000-"]


def test_proxy_reset_after(fault_proxy, blob):
    proxy = fault_proxy()
    proxy.add(faultproxy.reset_after(1000))

    with pytest.raises(requests.exceptions.ChunkedEncodingError) as failure:
        requests.get(proxied_blob(proxy, blob), timeout=5)
    again = requests.get(proxied_blob(proxy, blob), timeout=5)

    assert "reset" in str(failure.value).lower()
    assert again.content == blob[2]
    assert proxy.bytes_sent[proxy.requests[0].path] == 1000 + len(blob[2])


def test_proxy_truncate_and_flip(fault_proxy, blob):
    proxy = fault_proxy()
    proxy.add(faultproxy.truncate(500))
    proxy.add(faultproxy.flip(10))

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(proxied_blob(proxy, blob), timeout=5)
    flipped = requests.get(proxied_blob(proxy, blob), timeout=5)

    assert len(flipped.content) == len(blob[2])
    assert sha256(flipped.content) != blob[1]
    assert flipped.content[10] == blob[2][10] ^ 0xFF


def test_proxy_status_with_retry_after(fault_proxy, blob):
    proxy = fault_proxy()
    proxy.add(faultproxy.status(429, {"Retry-After": "2"}), times=2)

    answers = [requests.get(proxied_blob(proxy, blob), timeout=5) for _ in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "2"


def test_proxy_chunked(fault_proxy, blob):
    proxy = fault_proxy()
    proxy.add(faultproxy.chunked())

    response = requests.get(proxied_blob(proxy, blob), timeout=5)

    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    assert response.content == blob[2]


@pytest.mark.parametrize(
    ("fault", "expected_status", "expected_length"),
    [
        (faultproxy.ignore_range(), 200, 256 * 1024),
        (faultproxy.range_416(), 416, 0),
    ],
    ids=["ignore_range", "range_416"],
)
def test_proxy_range_faults(fault_proxy, blob, fault, expected_status, expected_length):
    proxy = fault_proxy()
    proxy.add(fault)
    url = proxied_blob(proxy, blob)

    plain = requests.get(url, timeout=5)
    ranged = requests.get(url, headers={"Range": "bytes=100-"}, timeout=5)

    assert plain.status_code == 200
    assert ranged.status_code == expected_status
    assert len(ranged.content) == expected_length


def test_proxy_slow(fault_proxy, blob):
    proxy = fault_proxy()
    proxy.add(faultproxy.slow(5))

    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(proxied_blob(proxy, blob), timeout=0.3)


def test_proxy_redirect_target_rejects_authorization(fault_proxy, blob):
    proxy = fault_proxy()
    target = fault_proxy.blob_server()
    proxy.add(faultproxy.redirect(target), times=2)
    url = proxied_blob(proxy, blob)
    auth = {"Authorization": "Bearer secret"}

    first = requests.get(url, headers=auth, allow_redirects=False, timeout=5)
    with_auth = requests.get(first.headers["Location"], headers=auth, timeout=5)
    followed = requests.get(url, timeout=5)

    assert first.status_code == 307
    assert first.headers["Location"].startswith(target.url)
    assert with_auth.status_code == 400 and target.auth_seen
    assert followed.content == blob[2]


def test_proxy_rewrites_upload_location(fault_proxy):
    proxy = fault_proxy()

    digest = Pusher(proxy.url).push_blob("proxy/upload", b"through the proxy")
    upload = proxy.requests_to(r"/blobs/uploads/$", "POST")[0]

    assert digest == sha256(b"through the proxy")
    assert upload.status == 202
    assert [r.method for r in proxy.requests_to(r"/blobs/uploads/.+", "PUT")] == ["PUT"]


def test_proxy_only_forwards_to_localhost():
    with pytest.raises(ValueError):
        FaultProxy("http://example.com:5000")


def test_proxy_rule_matches_method_and_path():
    rule = faultproxy.Rule(faultproxy.range_416(), path=re.compile(BLOB_PATH))
    blob_path = "/v2/a/b/blobs/sha256:" + "0" * 64

    assert rule.matches("GET", blob_path, {"Range": "bytes=0-"})
    assert not rule.matches("GET", blob_path, {})
    assert not rule.matches("HEAD", blob_path, {"Range": "bytes=0-"})
    assert not rule.matches("GET", "/v2/a/b/manifests/1", {"Range": "bytes=0-"})


# -- loaders ---------------------------------------------------------------------------


def tiny_docker_save(path) -> tuple[str, str]:
    """Write a one-layer docker-save archive; return (config digest, diff_id)."""
    layer = make_tar({"etc/hello": b"hello\n"})
    config = json.dumps(
        {
            "architecture": "arm",
            "variant": "v7",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
            "config": {},
        }
    ).encode()
    config_name = sha256(config).split(":")[1] + ".json"
    manifest = [
        {
            "Config": config_name,
            "RepoTags": ["127.0.0.1:5000/t/x:1"],
            "Layers": ["layer.tar"],
        }
    ]
    members = {
        config_name: config,
        "layer.tar": layer,
        "manifest.json": json.dumps(manifest).encode(),
    }
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return sha256(config), sha256(layer)


def test_podman_loads_a_hand_built_archive(tmp_path, loader_dir):
    config_digest, diff_id = tiny_docker_save(tmp_path / "tiny.tar")

    loaded = loaders.podman_load(tmp_path / "tiny.tar", loader_dir)
    image = loaders.podman_inspect(loaded[0], loader_dir)
    summary = loaders.skopeo_inspect(tmp_path / "tiny.tar")

    assert loaded == ["127.0.0.1:5000/t/x:1"]
    assert (image["Architecture"], image["Os"], image["Variant"]) == (
        "arm",
        "linux",
        "v7",
    )
    assert image["Id"] == config_digest.split(":")[1]
    assert image["RootFS"]["Layers"] == [diff_id]
    assert summary["Layers"] == [diff_id]


def test_podman_load_failure_shows_stderr(tmp_path, loader_dir):
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar")

    with pytest.raises(loaders.LoaderError, match="podman"):
        loaders.podman_load(broken, loader_dir)


def test_skopeo_copy_of_a_catalogue_image_loads(registry, images, tmp_path, loader_dir):
    record = images["whiteout/layers:1"]
    archive = loaders.skopeo_copy_to_archive(
        f"{registry.host}/whiteout/layers:1", tmp_path / "copy.tar"
    )

    loaded = loaders.podman_load(archive, loader_dir)
    image = loaders.podman_inspect(loaded[0], loader_dir)

    assert image["Id"] == record["config_digest"].split(":")[1]
    assert image["RootFS"]["Layers"] == record["diff_ids"]


def test_parse_loaded():
    output = "Loaded image: sha256:abc\nLoaded image(s): a:1, b:2\nnoise\n"

    assert loaders.parse_loaded(output) == ["sha256:abc", "a:1", "b:2"]
