"""Platform normalisation and choosing an index entry, as containerd does."""

import pytest

from dgetkit.errors import InvalidPlatform
from dgetkit.platform import Platform, choose

NORMALISED = [
    ("linux/amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("linux/x86-64", "linux/amd64"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/arm/7", "linux/arm/v7"),
    ("linux/arm/6", "linux/arm/v6"),
    ("linux/armhf", "linux/arm/v7"),
    ("linux/armel", "linux/arm/v6"),
    ("linux/i386", "linux/386"),
    ("Linux/AMD64", "linux/amd64"),
    ("macos/arm64", "darwin/arm64"),
    ("arm64", "linux/arm64"),
    ("windows/amd64", "windows/amd64"),
]


@pytest.mark.parametrize("text, expected", NORMALISED, ids=[n[0] for n in NORMALISED])
def test_normalise(text, expected):
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize("text", ["", "linux/", "a/b/c/d", "/amd64"])
def test_bad_platform(text):
    with pytest.raises(InvalidPlatform, match="os/architecture"):
        Platform.parse(text)


P = Platform.parse
INDEX = [P("linux/amd64"), P("linux/arm64/v8"), P("linux/arm/v6"), P("linux/arm/v5")]

CHOICES = [
    ("linux/amd64", INDEX, 0),
    ("linux/arm64", INDEX, 1),
    ("linux/aarch64", INDEX, 1),
    ("linux/arm/v7", INDEX, 2),  # falls back to v6
    ("linux/arm/v6", INDEX, 2),
    ("linux/arm/v5", INDEX, 3),  # never upward to v6
    ("linux/s390x", INDEX, None),
    ("windows/amd64", INDEX, None),
    ("linux/arm/v7", [P("linux/arm/v5"), P("linux/arm/v7")], 1),  # exact beats fallback
    ("linux/amd64", [None, P("linux/amd64")], 1),
    ("linux/arm/v7", [P("linux/arm/v8")], None),
]


@pytest.mark.parametrize(
    "wanted, candidates, expected",
    CHOICES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CHOICES)],
)
def test_choose(wanted, candidates, expected):
    assert choose(P(wanted), candidates) == expected


def test_descriptor_round_trip():
    platform = Platform.from_dict(
        {"os": "linux", "architecture": "arm", "variant": "v7"}
    )
    assert platform.to_dict() == {"os": "linux", "architecture": "arm", "variant": "v7"}
    assert Platform.from_dict(None) is None
