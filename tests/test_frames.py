"""The notebook DataFrames, against a real registry on 127.0.0.1."""

from __future__ import annotations

import json
import math
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import requests

import dgetkit
from dgetkit import frames
from dgetkit import registry as registry_module
from dgetkit.errors import (
    DgetkitError,
    IntegrityError,
    InvalidOption,
    RegistryError,
    RegistryUnreachable,
    RepositoryNotFound,
    UnsupportedMediaType,
)
from dgetkit.manifest import Index
from tests.support.demo import push_demo, push_many_layers
from tests.support.faultproxy import BLOB_PATH, MANIFEST_PATH, flip, status
from tests.support.images import (
    EMPTY_LAYER_HISTORY,
    Pusher,
    make_config,
    make_layer,
    push_recorded,
)
from tests.support.loaders import podman_inspect, podman_load

pytestmark = pytest.mark.integration

MANY_LAYERS = 30


@pytest.fixture(scope="module")
def demo(registry, images):
    """The demo index and a 30-layer image, pushed next to the catalogue."""
    pusher = Pusher(registry.url)
    records, index = push_demo(pusher)
    many = push_many_layers(pusher, MANY_LAYERS)
    noise = random.Random(7).randbytes(2 << 20).hex().encode()  # gzips to ~2 MiB
    big_layers = [make_layer({"noise": noise})]
    big = push_recorded(pusher, "big/layer", "1", big_layers, make_config(big_layers))
    return {"records": records, "index": index, "many": many, "big": big}


@pytest.fixture
def fresh_clients(monkeypatch):
    """No shared registry client survives from earlier tests (tokens, pings)."""
    monkeypatch.setattr(registry_module, "_clients", {})


def ref(registry, name: str) -> str:
    return f"{registry.host}/{name}"


# -- platforms -----------------------------------------------------------------------

PLATFORM_CASES = [
    ("multi/oci:1", 4, 4, "application/vnd.oci.image.manifest.v1+json"),
    ("multi/docker:1", 4, 0, "application/vnd.docker.distribution.manifest.v2+json"),
    ("single/oci-gzip:1", 1, 0, "application/vnd.oci.image.manifest.v1+json"),
]


@pytest.mark.parametrize(
    "name, runnable, attestations, media_type",
    PLATFORM_CASES,
    ids=["oci-index-with-attestations", "docker-list", "single-image"],
)
def test_platforms_lists_every_entry_and_flags_attestations(
    registry, images, name, runnable, attestations, media_type
):
    table = dgetkit.platforms(ref(registry, name))

    assert len(table) == runnable + attestations
    assert table["attestation"].sum() == attestations
    assert table["size"].dtype == "int64" and table["attestation"].dtype == bool
    images_only = table[~table["attestation"]]
    assert set(images_only["media_type"]) == {media_type}
    record = images[name]
    if "platforms" in record:
        expected = {p: r["digest"] for p, r in record["platforms"].items()}
        got = dict(zip(images_only["platform"], images_only["digest"]))
        assert got == expected
        flagged = table[table["attestation"]]
        assert set(flagged["digest"]) == set(record["attestations"])
        assert set(flagged["attests"]) <= set(expected.values())
        assert set(flagged["platform"]) <= {"unknown/unknown"}
    else:
        assert images_only["digest"].tolist() == [record["digest"]]
        assert images_only["platform"].tolist() == [record["platform"]]
        assert images_only["size"].tolist() == [record["size"]]


def test_platforms_sizes_add_each_images_compressed_size(registry, images):
    table = dgetkit.platforms(ref(registry, "multi/oci:1"), sizes=True)

    for platform, record in images["multi/oci:1"]["platforms"].items():
        row = table[table["platform"] == platform].iloc[0]
        assert row["layers"] == len(record["layers"])
        assert row["compressed_size"] == sum(layer.size for layer in record["layers"])
        assert row["compressed_size_human"].endswith(" B")
    assert (table.loc[table["attestation"], "layers"] == 1).all()


# -- layers and history --------------------------------------------------------------


def test_layers_of_many_layers_in_order_with_their_history(registry, demo):
    record = demo["many"]
    table = dgetkit.layers(ref(registry, "many/layers:1"))

    assert len(table) == MANY_LAYERS
    assert table["layer"].tolist() == list(range(MANY_LAYERS))
    assert table["digest"].tolist() == record["layer_digests"]
    assert table["diff_id"].tolist() == record["diff_ids"]
    assert table["size"].tolist() == [layer.size for layer in record["layers"]]
    assert table["size"].dtype == "int64"
    # Every third step is an empty ENV step: pairing must skip it.
    expected = [f"RUN make layer {i}" for i in range(MANY_LAYERS)]
    assert table["created_by"].tolist() == expected
    assert str(table["created"].dtype).startswith("datetime64")


@pytest.mark.parametrize(
    "platform", ["linux/arm/v7", "linux/arm64", "linux/amd64"], ids=str
)
def test_layers_of_the_chosen_platform(registry, images, platform):
    record = images["multi/oci:1"]["platforms"]
    wanted = "linux/arm64/v8" if platform == "linux/arm64" else platform

    table = dgetkit.layers(ref(registry, "multi/oci:1"), platform=platform)

    assert table["digest"].tolist() == record[wanted]["layer_digests"]


def test_history_keeps_empty_steps_and_points_others_at_their_layer(registry, images):
    record = images["history/empty:1"]
    table = dgetkit.history(ref(registry, "history/empty:1"))

    assert table["created_by"].tolist() == [
        s["created_by"] for s in EMPTY_LAYER_HISTORY
    ]
    assert table["empty_layer"].tolist() == [True, False, True, False, True]
    assert table["layer"].tolist() == [pd.NA, 0, pd.NA, 1, pd.NA]
    made = table[~table["empty_layer"]]
    assert made["digest"].tolist() == record["layer_digests"]
    assert made["size"].tolist() == [layer.size for layer in record["layers"]]
    assert table.loc[table["empty_layer"], "digest"].isna().all()

    layers = dgetkit.layers(ref(registry, "history/empty:1"))
    assert layers["created_by"].tolist() == ["COPY first /", "COPY second /"]


# -- tags ----------------------------------------------------------------------------


class TagPager(ThreadingHTTPServer):
    """A registry front that pages ``tags/list`` as the distribution spec says.

    distribution 2.8.2 ignores ``?n=`` on tag lists, so this server fetches the
    full list from the real registry and answers one page at a time, sorted,
    with a ``Link: <...>; rel="next"`` header while tags remain.
    https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-tags
    """

    daemon_threads = True
    default_page = 10

    def __init__(self, upstream: str, absolute_links: bool):
        super().__init__(("127.0.0.1", 0), _PagerHandler)
        self.upstream = upstream
        self.absolute_links = absolute_links
        self.queries: list[dict] = []
        self.host = f"127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self.shutdown()
        self.server_close()


class _PagerHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        if parts.path == "/v2/":
            return self._send(200, {})
        match = re.fullmatch(r"/v2/(.+)/tags/list", parts.path)
        if not match:
            return self._send(404, {"errors": [{"code": "UNSUPPORTED"}]})
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.queries.append(query)
        every = requests.get(self.server.upstream + parts.path, timeout=10).json()
        size = int(query.get("n", self.server.default_page))
        rest = [t for t in sorted(every["tags"]) if t > query.get("last", "")]
        page, more = rest[:size], len(rest) > size
        link = None
        if more:
            base = f"http://{self.server.host}" if self.server.absolute_links else ""
            link = f'<{base}{parts.path}?n={size}&last={page[-1]}>; rel="next"'
        return self._send(200, {"name": match[1], "tags": page}, link)

    def _send(self, code, body, link=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if link:
            self.send_header("Link", link)
        self.end_headers()
        self.wfile.write(data)


@pytest.mark.parametrize(
    "page_size, absolute_links",
    [(None, False), (1, False), (4, False), (4, True), (25, False), (100, True)],
    ids=[
        "server-default-10",
        "one-per-page",
        "four-per-page",
        "four-per-page-absolute-link",
        "exactly-all",
        "more-than-all",
    ],
)
def test_tags_follow_link_pagination(registry, images, page_size, absolute_links):
    expected = sorted(images["tags/many"]["tags"])
    with TagPager(registry.url, absolute_links) as pager:
        table = dgetkit.tags(f"{pager.host}/tags/many", page_size=page_size)

    assert table["tag"].tolist() == expected
    assert table["reference"].tolist() == [
        f"{pager.host}/tags/many:{t}" for t in expected
    ]
    pages = math.ceil(len(expected) / (page_size or TagPager.default_page))
    assert len(pager.queries) == pages
    assert [q.get("last") for q in pager.queries][1:] == [
        expected[i * (page_size or 10) - 1] for i in range(1, pages)
    ]


def test_tags_of_a_real_registry_and_of_a_missing_repository(registry, images):
    table = dgetkit.tags(ref(registry, "tags/many:t03"))
    assert sorted(table["tag"]) == sorted(images["tags/many"]["tags"])

    with pytest.raises(RepositoryNotFound):
        dgetkit.tags(ref(registry, "no/such/repository"))
    with pytest.raises(InvalidOption):
        dgetkit.tags(ref(registry, "tags/many"), page_size=0)


# -- files ---------------------------------------------------------------------------

WHITEOUT_TOP = {
    "etc": ("dir", False, ""),
    "etc/.wh.old.conf": ("file", True, ""),
    "home": ("dir", False, ""),
    "home/user": ("dir", False, ""),
    "home/user/notes": ("file", False, ""),
    "usr": ("dir", False, ""),
    "usr/bin": ("dir", False, ""),
    "usr/bin/tool": ("file", False, ""),
    "usr/bin/tool-link": ("symlink", False, "tool"),
    "usr/bin/tool-hard": ("hardlink", False, "usr/bin/tool"),
    "var": ("dir", False, ""),
    "var/cache": ("dir", False, ""),
    "var/cache/app": ("dir", False, ""),
    "var/cache/app/.wh..wh..opq": ("file", True, ""),
    "var/cache/app/fresh": ("file", False, ""),
}


def test_files_of_a_layer_with_whiteouts_links_and_owners(registry, images):
    listing = dgetkit.files(
        ref(registry, "whiteout/layers:1"), layer=-1, progress=False
    )

    got = {
        row.path: (row.type, row.whiteout, row.linkname) for row in listing.itertuples()
    }
    assert got == WHITEOUT_TOP
    notes = listing.set_index("path").loc["home/user/notes"]
    assert (notes["mode"], notes["uid"], notes["gid"], notes["size"]) == (
        "0600",
        1000,
        1000,
        5,
    )
    assert listing.set_index("path").loc["usr/bin/tool", "mode"] == "0755"
    assert listing["mtime"].iloc[0] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")
    assert listing[["size", "uid", "gid"]].dtypes.tolist() == ["int64"] * 3


@pytest.mark.parametrize(
    "name, position",
    [
        ("single/oci-gzip:1", 1),
        ("single/oci-zstd:1", 1),
        ("single/oci-plain:1", 0),
        ("single/docker-plain:1", 1),
        ("mislabel/media:1", 0),
        ("whiteout/layers:1", 0),
    ],
    ids=["gzip", "zstd", "uncompressed", "docker-uncompressed", "mislabelled", "base"],
)
def test_files_stream_every_compression(registry, images, name, position):
    expected = images[name]["layers"][position].names

    listing = dgetkit.files(ref(registry, name), layer=position, progress=False)

    assert tuple(listing["path"]) == expected


def test_files_choose_a_layer_by_digest_diff_id_or_descriptor(registry, images):
    record = images["whiteout/layers:1"]
    reference = ref(registry, "whiteout/layers:1")
    top_names = record["layers"][1].names
    image = dgetkit.image(reference)
    selectors = [
        record["layer_digests"][1],
        record["layer_digests"][1].split(":")[1][:12],
        record["diff_ids"][1],
        image.image.manifest.layers[1],
    ]
    for selector in selectors:
        listing = dgetkit.files(reference, layer=selector, progress=False)
        assert tuple(listing["path"]) == top_names, selector

    for wrong in (2, -3, "sha256:" + "0" * 64):
        with pytest.raises(InvalidOption):
            dgetkit.files(reference, layer=wrong, progress=False)


@pytest.mark.parametrize(
    "name, offset",
    [("notebook/demo:1", 30), ("big/layer:1", 1000)],
    ids=["small-zstd-layer", "large-gzip-layer-fails-to-decompress-first"],
)
def test_files_report_a_corrupted_layer_as_an_integrity_error(
    registry, demo, fault_proxy, name, offset
):
    record = demo["big"] if name == "big/layer:1" else demo["records"]["linux/amd64"]
    digest = record["layer_digests"][-1]
    proxy = fault_proxy()
    proxy.add(flip(offset), path=re.escape(f"/blobs/{digest}") + "$")

    with pytest.raises(IntegrityError) as caught:
        dgetkit.files(
            f"{proxy.host}/{name}", platform="linux/amd64", layer=-1, progress=False
        )
    assert digest in str(caught.value)
    assert proxy.requests_to(BLOB_PATH)


def test_files_of_a_blob_that_is_no_tar_says_so(registry, images):
    attestation = images["multi/oci:1"]["attestations"][0]

    with pytest.raises(UnsupportedMediaType, match="arrived intact but is not a tar"):
        dgetkit.files(
            ref(registry, f"multi/oci@{attestation}"), layer=0, progress=False
        )


def test_files_progress_counts_every_byte(registry, demo):
    class Counter:
        total = None
        n = 0

        def update(self, n):
            self.n += n

        def close(self):
            pass

    counter = Counter()
    record = demo["records"]["linux/arm64"]
    dgetkit.files(
        ref(registry, "notebook/demo:1"),
        platform="linux/arm64",
        layer=1,
        progress=counter,
    )
    assert counter.n == counter.total == record["layers"][1].size


# -- config, rate limit, cache ---------------------------------------------------------


def test_config_is_readable_as_a_dict_a_table_and_html(registry, demo):
    settings = dgetkit.config(ref(registry, "notebook/demo:1"), platform="linux/arm64")

    assert settings["architecture"] == "arm64"
    assert settings["entrypoint"] == ["/usr/bin/app"] and settings["cmd"] == ["serve"]
    assert settings["env"] == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "APP_HOME": "/srv/app",
    }
    assert settings["exposed_ports"] == ["8080/tcp"]
    assert (settings["user"], settings["working_dir"]) == ("app", "/srv/app")
    assert settings["labels"]["note"] == "<b>not bold</b>"
    rows = dict(settings.frame().itertuples(index=False))
    assert rows["env.APP_HOME"] == "/srv/app" and rows["cmd"] == '["serve"]'
    page = settings._repr_html_()
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>not bold" not in page


RATELIMIT_CASES = [
    (
        {
            "ratelimit-limit": "100;w=21600",
            "ratelimit-remaining": "97;w=21600",
            "docker-ratelimit-source": "203.0.113.7",
        },
        [100, 97, 21600, "203.0.113.7"],
    ),
    ({"ratelimit-limit": "200", "ratelimit-remaining": "0"}, [200, 0, pd.NA, ""]),
    ({}, None),
]


@pytest.mark.parametrize(
    "headers, expected",
    RATELIMIT_CASES,
    ids=["docker-hub-anonymous", "no-window-no-source", "no-headers"],
)
def test_ratelimit_reads_the_head_answer(
    registry, images, fault_proxy, headers, expected
):
    proxy = fault_proxy()
    if headers:
        answer = {"Docker-Content-Digest": images["multi/oci:1"]["digest"], **headers}
        proxy.add(status(200, answer), path=MANIFEST_PATH, method="HEAD")

    table = dgetkit.ratelimit(f"{proxy.host}/multi/oci:1")

    assert table.columns.tolist() == frames.RATELIMIT_COLUMNS
    if expected is None:
        assert table.empty
    else:
        assert table.iloc[0].tolist() == expected
    assert [r.method for r in proxy.requests_to(MANIFEST_PATH)] == ["HEAD"]


def test_cache_frame_lists_what_a_pull_left(registry, images, tmp_path):
    record = images["single/oci-zstd:1"]
    assert dgetkit.cache_frame(tmp_path / "cache").empty

    dgetkit.pull(
        ref(registry, "single/oci-zstd:1"),
        tmp_path / "a.tar.gz",  # a .tar.gz keeps uncompressed layers in the cache
        cache=tmp_path / "cache",
        progress=False,
    )

    table = dgetkit.cache_frame(tmp_path / "cache")
    blobs = set(table.loc[table["kind"] == "blob", "digest"])
    layers = set(table.loc[table["kind"] == "layer", "digest"])
    assert set(record["layer_digests"]) <= blobs
    assert set(record["diff_ids"]) == layers
    assert (table["size"] > 0).all() and table["size"].dtype == "int64"


# -- the image handle ------------------------------------------------------------------


def test_image_handle_reuses_its_manifest_and_pulls_that_exact_image(
    registry, images, tmp_path, loader_dir
):
    record = images["multi/oci:1"]["platforms"]["linux/arm/v7"]
    img = dgetkit.image(ref(registry, "multi/oci:1"), platform="linux/arm/v7")

    page = img._repr_html_()
    for text in (
        record["digest"],
        "linux/arm/v7",
        "multi/oci:1",
        record["config_digest"],
    ):
        assert text in page
    assert (img.layer_count, img.size) == (2, sum(x.size for x in record["layers"]))

    with dgetkit.record() as seen:
        assert img.layers()["digest"].tolist() == record["layer_digests"]
        assert len(img.history()) == 2 and img.config()["variant"] == "v7"
        assert len(img.platforms()) == 8
    assert len(seen) == 0

    with dgetkit.record() as seen:
        img.files(0, progress=False)
    assert [e.url.rsplit("/", 1)[-1] for e in seen.exchanges] == [
        record["layer_digests"][0]
    ]

    other = dgetkit.layers(img, platform="linux/amd64")
    assert (
        other["digest"].tolist()
        == images["multi/oci:1"]["platforms"]["linux/amd64"]["layer_digests"]
    )

    result = img.pull(tmp_path / "arm.tar", progress=False)
    assert result.digest == record["digest"]
    loaded = podman_load(result.path, loader_dir)
    assert loaded == [ref(registry, "multi/oci:1")]
    inspected = podman_inspect(loaded[0], loader_dir)
    assert inspected["Id"] == record["config_digest"].split(":")[1]
    assert (inspected["Architecture"], inspected["Variant"]) == ("arm", "v7")


# -- connection settings and errors ----------------------------------------------------


def test_connection_settings_are_checked():
    assert frames.connection(insecure=True, retries=2).retries == 2
    with pytest.raises(InvalidOption, match="unknown connection setting passwd"):
        frames.connection(passwd="x")
    with pytest.raises(InvalidOption, match="not both"):
        frames.connection(dgetkit.Options(), insecure=True)


@pytest.mark.parametrize(
    "function",
    [
        dgetkit.platforms,
        dgetkit.layers,
        dgetkit.history,
        dgetkit.config,
        dgetkit.ratelimit,
    ],
    ids=lambda f: f.__name__,
)
def test_errors_stay_dgetkit_errors(registry, images, function):
    with pytest.raises(RegistryError) as caught:
        function(ref(registry, "no/such:1"))
    assert caught.value.status == 404
    with pytest.raises(RegistryUnreachable):
        function("127.0.0.1:9/x:1", retries=0)
    with pytest.raises(DgetkitError, match="not a valid image reference"):
        function("Bad Name!")


# -- teaching steps --------------------------------------------------------------------


@pytest.mark.parametrize(
    "server, scheme",
    [("registry", ""), ("token_registry", "bearer"), ("basic_registry", "basic")],
    ids=["open", "token", "basic"],
)
def test_ping_shows_the_challenge(request, fresh_clients, server, scheme):
    target = request.getfixturevalue(server)
    options = {"ca_cert": str(target.ca_cert)} if target.ca_cert else {}

    answer = frames.ping(target.host, **options)

    assert answer["scheme"] == scheme
    assert answer["status"] == (200 if not scheme else 401)
    assert answer["url"] == f"{target.url}/v2/"
    assert answer["api_version"] == "registry/2.0"
    if scheme == "bearer":
        assert answer["realm"] == target.token_server.realm
        assert answer["service"] == target.token_server.service


@pytest.mark.parametrize("login", [False, True], ids=["anonymous", "logged-in"])
def test_teaching_steps_show_ping_challenge_token_manifests_and_blobs(
    token_registry, fresh_clients, login
):
    user, password = next(iter(token_registry.users.items()))
    pusher = Pusher(
        token_registry.url, auth=(user, password), verify=token_registry.ca_cert
    )
    records, index = push_demo(pusher, "teach/demo", "1")
    settings = {"ca_cert": str(token_registry.ca_cert)}
    if login:
        settings |= {"username": user, "password": password}
    reference = dgetkit.Reference.parse(f"{token_registry.host}/teach/demo:1")

    with dgetkit.record() as step1:
        frames.ping(reference.registry, **settings)
    with dgetkit.record() as step2:
        top = frames.manifest(reference, **settings)
    with dgetkit.record() as step3:
        child = frames.manifest(reference, platform="linux/arm64", **settings)
    with dgetkit.record() as step4:
        raw = frames.blob(reference, child.config, **settings)

    assert [(e.method, e.status) for e in step1.exchanges] == [("GET", 401)]
    token, got_index = step2.exchanges
    assert token.url.startswith(token_registry.token_server.realm)
    assert "scope=repository:teach/demo:pull" in token.url
    assert token.authorization == ("Basic <redacted>" if login else "")
    assert got_index.authorization == "Bearer <redacted>"
    assert isinstance(top, Index) and str(top.digest) == index["digest"]
    assert [e.status for e in step3.exchanges] == [200, 200]
    assert str(child.digest) == records["linux/arm64"]["digest"]
    assert raw == records["linux/arm64"]["config"]
    assert len(step4) == 1 and "/blobs/" in step4.exchanges[0].url
    everything = pd.concat([s.frame() for s in (step1, step2, step3, step4)])
    text = everything.to_csv()
    assert "eyJ" not in text and password not in text
