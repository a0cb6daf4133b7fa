"""Reference parsing and Docker's normalisation."""

import pytest

from dgetkit.errors import InvalidReference
from dgetkit.reference import Reference, is_loopback

HEX = "a" * 64

PARSED = [
    ("alpine", "docker.io", "library/alpine", "latest", None),
    ("alpine:3.20", "docker.io", "library/alpine", "3.20", None),
    ("library/alpine", "docker.io", "library/alpine", "latest", None),
    ("docker.io/library/alpine:3.20", "docker.io", "library/alpine", "3.20", None),
    ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
    ("index.docker.io/x/y", "docker.io", "x/y", "latest", None),
    (f"ghcr.io/org/app@sha256:{HEX}", "ghcr.io", "org/app", None, HEX),
    ("localhost:5000/a/b/c:tag", "localhost:5000", "a/b/c", "tag", None),
    ("localhost/app", "localhost", "app", "latest", None),
    (
        "127.0.0.1:5000/ns/app:1.2.3-rc_1",
        "127.0.0.1:5000",
        "ns/app",
        "1.2.3-rc_1",
        None,
    ),
    (f"name:tag@sha256:{HEX}", "docker.io", "library/name", "tag", HEX),
    ("user/repo", "docker.io", "user/repo", "latest", None),
    ("my.registry/team/app:v1", "my.registry", "team/app", "v1", None),
]


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest_hex", PARSED, ids=[p[0] for p in PARSED]
)
def test_parse_normalises_like_docker(text, registry, repository, tag, digest_hex):
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (ref.digest.hex if ref.digest else None) == digest_hex


BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("Alpine", "lower case"),
    ("ns/App:1", "lower case"),
    ("alpine@sha256:abc", "digest"),
    ("alpine@sha256:" + "A" * 64, "digest"),
    ("alpine:bad tag", "not a valid"),
    ("alpine::1", "not a valid"),
    ("-alpine", "not a valid"),
]


@pytest.mark.parametrize("text, words", BAD, ids=[repr(b[0]) for b in BAD])
def test_bad_references_say_what_is_wrong(text, words):
    with pytest.raises(InvalidReference, match=words) as caught:
        Reference.parse(text)
    assert isinstance(caught.value, ValueError)


def test_names_for_archives_and_api():
    ref = Reference.parse("alpine:3.20")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.tagged_name == "docker.io/library/alpine:3.20"
    assert ref.familiar_repository == "alpine"
    assert ref.identifier == "3.20"

    pinned = Reference.parse(f"127.0.0.1:5000/ns/app@sha256:{HEX}")
    assert pinned.tagged_name is None
    assert pinned.identifier == f"sha256:{HEX}"
    assert pinned.api_host == "127.0.0.1:5000"
    assert str(pinned) == f"127.0.0.1:5000/ns/app@sha256:{HEX}"


@pytest.mark.parametrize(
    "host, expected",
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("registry-1.docker.io", False),
        ("10.0.0.1:5000", False),
        ("ghcr.io", False),
    ],
)
def test_loopback_hosts_may_use_plain_http(host, expected):
    assert is_loopback(host) is expected
