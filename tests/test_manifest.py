"""Parsing manifests and indexes, by media type or by the body's shape."""

import json

import pytest

from dgetkit.digest import Digest, Verifier
from dgetkit.errors import (
    DigestMismatch,
    InvalidDigest,
    Schema1NotSupported,
    SizeMismatch,
    UnsupportedMediaType,
)
from dgetkit.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageManifest,
    Index,
    check_config_media_type,
    parse_manifest,
)

D = "sha256:" + "b" * 64
LAYER = {
    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
    "digest": D,
    "size": 3,
}
CONFIG = {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": D,
    "size": 2,
}
IMAGE = {"schemaVersion": 2, "config": CONFIG, "layers": [LAYER]}
ENTRY = {
    "mediaType": OCI_MANIFEST,
    "digest": D,
    "size": 5,
    "platform": {"os": "linux", "architecture": "amd64"},
}
ATTESTATION = {
    "mediaType": OCI_MANIFEST,
    "digest": D,
    "size": 5,
    "platform": {"os": "unknown", "architecture": "unknown"},
    "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
}
INDEX = {"schemaVersion": 2, "manifests": [ENTRY, ATTESTATION]}

CASES = [
    ("oci image by header", IMAGE, OCI_MANIFEST, ImageManifest, OCI_MANIFEST),
    (
        "docker image by body",
        {**IMAGE, "mediaType": DOCKER_MANIFEST},
        "",
        ImageManifest,
        DOCKER_MANIFEST,
    ),
    (
        "mislabelled as json",
        {**IMAGE, "mediaType": DOCKER_MANIFEST},
        "application/json",
        ImageManifest,
        DOCKER_MANIFEST,
    ),
    ("image by shape", IMAGE, "text/plain", ImageManifest, OCI_MANIFEST),
    ("oci index by header", INDEX, OCI_INDEX, Index, OCI_INDEX),
    (
        "docker list by body",
        {**INDEX, "mediaType": DOCKER_LIST},
        "",
        Index,
        DOCKER_LIST,
    ),
    ("index by shape", INDEX, "", Index, OCI_INDEX),
]


@pytest.mark.parametrize(
    "name, body, content_type, kind, media_type", CASES, ids=[c[0] for c in CASES]
)
def test_parse(name, body, content_type, kind, media_type):
    parsed = parse_manifest(json.dumps(body).encode(), content_type)
    assert isinstance(parsed, kind)
    assert parsed.media_type == media_type


def test_index_skips_attestations():
    index = parse_manifest(json.dumps(INDEX).encode(), OCI_INDEX)
    assert [d.is_attestation for d in index.manifests] == [False, True]
    assert len(index.images) == 1


@pytest.mark.parametrize(
    "body, content_type",
    [
        ({"schemaVersion": 1, "fsLayers": []}, ""),
        (
            {"schemaVersion": 1},
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
    ],
    ids=["by-body", "by-header"],
)
def test_schema1_is_a_named_error(body, content_type):
    with pytest.raises(Schema1NotSupported, match="schema 1"):
        parse_manifest(json.dumps(body).encode(), content_type)


def test_unknown_and_artifact_types_are_refused():
    with pytest.raises(UnsupportedMediaType):
        parse_manifest(b'{"mediaType": "application/vnd.docker.plugin.v1+json"}', "")
    artifact = parse_manifest(
        json.dumps(
            {
                **IMAGE,
                "config": {
                    **CONFIG,
                    "mediaType": "application/vnd.cncf.helm.config.v1+json",
                },
            }
        ).encode(),
        OCI_MANIFEST,
    )
    with pytest.raises(UnsupportedMediaType, match="artifact"):
        check_config_media_type(artifact.config)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256",
        "sha256:abc",
        "sha256:" + "G" * 64,
        "md5:" + "a" * 32,
        "sha256:" + "A" * 64,
    ],
)
def test_bad_digests(text):
    with pytest.raises(InvalidDigest):
        Digest.parse(text)


def test_verifier_checks_size_and_digest():
    good = Digest.of(b"hello")
    verifier = Verifier(good, 5)
    verifier.update(b"hel")
    verifier.update(b"lo")
    verifier.verify()

    short = Verifier(good, 6)
    short.update(b"hello")
    with pytest.raises(SizeMismatch):
        short.verify()

    wrong = Verifier(good, 5)
    wrong.update(b"jello")
    with pytest.raises(DigestMismatch) as caught:
        wrong.verify()
    assert caught.value.expected == str(good)
    assert caught.value.got == str(Digest.of(b"jello"))

    long = Verifier(good, 2)
    with pytest.raises(SizeMismatch):
        long.update(b"hello")
