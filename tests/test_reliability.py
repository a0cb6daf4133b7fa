"""Never lose a pull: faults from a proxy in front of a real registry.

Each case ends in either a correct archive or the named error, and never in
a file at the target path that is not a complete, verified archive.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import subprocess
import tarfile
import time

import pytest

import dgetkit
from dgetkit import errors
from dgetkit.cache import Cache
from dgetkit.digest import Digest
from tests.support import faultproxy as fp
from tests.support.images import Pusher, make_config, make_layer, push_recorded

pytestmark = pytest.mark.integration

BIG = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def big_image(registry):
    """An image whose one layer is a few MiB of incompressible bytes."""
    data = hashlib.sha256(b"seed").digest() * (BIG // 32)
    noise = bytes(b ^ (i * 131 % 251) for i, b in enumerate(data[: 256 * 1024]))
    layers = [
        make_layer({"noise": os.urandom(BIG)}),
        make_layer({"small": noise}),
    ]
    config = make_config(layers)
    return push_recorded(Pusher(registry.url), "big/layer", "1", layers, config)


@pytest.fixture
def sleeps(monkeypatch):
    """Every retry's wait, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr("dgetkit.registry.sleep", waited.append)
    return waited


def pull_through(proxy, path, cache, **kwargs):
    kwargs.setdefault("progress", False)
    return dgetkit.pull(f"{proxy.host}/big/layer:1", path, cache=cache, **kwargs)


def check_complete(path, record):
    with tarfile.open(path) as tar:
        (item,) = json.loads(tar.extractfile("manifest.json").read())
        for name, diff_id in zip(item["Layers"], record["diff_ids"]):
            data = tar.extractfile(name).read()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id


def big_layer_path(record) -> str:
    """Faults aimed at the big layer only, not at the config blob."""
    return f"/blobs/{record['layer_digests'][0]}$"


def half_of(record) -> int:
    return record["layers"][0].size // 2


# (id, faults to add as (fault, path, times), expected error or None)
RECOVERED = [
    ("reset-mid-blob", [(fp.reset_after(1_000_000), fp.BLOB_PATH, 1)]),
    ("reset-three-times", [(fp.reset_after(700_000), fp.BLOB_PATH, 3)]),
    ("truncated-body", [(fp.truncate(1_500_000), fp.BLOB_PATH, 1)]),
    ("500-manifest", [(fp.status(500), fp.MANIFEST_PATH, 1)]),
    ("502-blob", [(fp.status(502), fp.BLOB_PATH, 1)]),
    ("503-twice", [(fp.status(503), fp.BLOB_PATH, 2)]),
    ("408-manifest", [(fp.status(408), fp.MANIFEST_PATH, 1)]),
    ("504-ping", [(fp.status(504), r"^/v2/$", 1)]),
    ("chunked", [(fp.chunked(), fp.BLOB_PATH, 1)]),
    (
        "range-ignored",
        [
            (fp.reset_after(1_000_000), fp.BLOB_PATH, 1),
            (fp.ignore_range(), fp.BLOB_PATH, 1),
        ],
    ),
    (
        "range-416",
        [
            (fp.reset_after(1_000_000), fp.BLOB_PATH, 1),
            (fp.range_416(), fp.BLOB_PATH, 1),
        ],
    ),
]


@pytest.mark.parametrize(
    "faults", [c[1] for c in RECOVERED], ids=[c[0] for c in RECOVERED]
)
def test_recovers(fault_proxy, big_image, tmp_path, sleeps, caplog, faults):
    proxy = fault_proxy()
    for fault, path, times in faults:
        path = big_layer_path(big_image) if path == fp.BLOB_PATH else path
        proxy.add(fault, path=path, times=times)
    caplog.set_level(logging.INFO, logger="dgetkit")
    out = tmp_path / "out.tar"
    pull_through(proxy, out, tmp_path / "cache")
    check_complete(out, big_image)
    assert all(rule.hits == rule.times for rule in proxy.rules)
    retried = any(fault.kind != "chunked" for fault, _, _ in faults)
    assert (len(caplog.records) >= 1) == retried  # an INFO line per retry or resume


def test_resume_asks_for_the_rest(fault_proxy, big_image, tmp_path, sleeps):
    proxy = fault_proxy()
    proxy.add(fp.reset_after(1_000_000), path=big_layer_path(big_image))
    pull_through(proxy, tmp_path / "out.tar", tmp_path / "cache")
    digest = big_image["layer_digests"][0]
    ranged = [r for r in proxy.requests_to(digest) if r.range]
    assert ranged and ranged[0].range.startswith("bytes=")
    offset = int(ranged[0].range[6:].rstrip("-"))
    assert 0 < offset <= 1_000_000
    # the resumed request fetched only the rest, not the whole blob again
    assert proxy.blob_bytes() < big_image["layers"][0].size + 1_100_000 + 300_000


@pytest.mark.parametrize(
    "retry_after, low, high",
    [("2", 2, 2), ("http-date", 1, 4), ("9999", 60, 60)],
    ids=["seconds", "http-date", "capped"],
)
def test_429_honours_retry_after(
    fault_proxy, big_image, tmp_path, sleeps, retry_after, low, high
):
    if retry_after == "http-date":
        retry_after = email.utils.formatdate(time.time() + 3, usegmt=True)
    proxy = fault_proxy()
    proxy.add(fp.status(429, {"Retry-After": retry_after}), path=fp.MANIFEST_PATH)
    pull_through(proxy, tmp_path / "out.tar", tmp_path / "cache")
    assert len(sleeps) == 1 and low <= sleeps[0] <= high


def test_429_forever_is_rate_limited(fault_proxy, big_image, tmp_path, sleeps):
    proxy = fault_proxy()
    proxy.add(fp.status(429, {"Retry-After": "1"}), path=fp.MANIFEST_PATH, times=100)
    with pytest.raises(errors.RateLimited, match="429"):
        pull_through(proxy, tmp_path / "out.tar", tmp_path / "cache")
    assert not (tmp_path / "out.tar").exists()


def test_slow_answer_times_out_and_retries(fault_proxy, big_image, tmp_path, sleeps):
    proxy = fault_proxy()
    proxy.add(fp.slow(3), path=fp.MANIFEST_PATH)
    options = dgetkit.Options(timeout=(2.0, 1.0))
    pull_through(proxy, tmp_path / "out.tar", tmp_path / "cache", options=options)
    check_complete(tmp_path / "out.tar", big_image)


def test_flipped_byte_is_refused_and_deleted(fault_proxy, big_image, tmp_path, sleeps):
    proxy = fault_proxy()
    proxy.add(fp.flip(12345), path=big_layer_path(big_image), times=10)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(errors.DigestMismatch) as caught:
        pull_through(proxy, tmp_path / "out.tar", cache)
    digest = Digest.parse(caught.value.expected)
    assert str(digest) in str(caught.value) and caught.value.got in str(caught.value)
    assert not cache.has_blob(digest) and not cache.part_path(digest).exists()
    assert list(tmp_path.glob("*.tar*")) == [] and list(tmp_path.glob(".*")) == []


def test_redirect_never_carries_authorization(fault_proxy, basic_registry, tmp_path):
    pusher = Pusher(
        basic_registry.url, auth=(basic_registry.username, basic_registry.password)
    )
    layers = [make_layer({"redirected": os.urandom(100_000)})]
    record = push_recorded(pusher, "redirect/app", "1", layers, make_config(layers))
    storage = fault_proxy.blob_server()
    proxy = fault_proxy(upstream=basic_registry)
    proxy.add(fp.redirect(storage), times=10)
    dgetkit.pull(
        f"{proxy.host}/redirect/app:1",
        tmp_path / "r.tar",
        progress=False,
        cache=False,
        username=basic_registry.username,
        password=basic_registry.password,
    )
    check_complete(tmp_path / "r.tar", record)
    assert storage.requests and not storage.auth_seen
    assert all(r.had_authorization for r in proxy.requests_to(r"/manifests/"))


def test_token_expiring_mid_pull_is_renewed(token_registry, token_server, tmp_path):
    pusher = Pusher(
        token_registry.url,
        auth=(token_registry.username, token_registry.password),
        verify=token_registry.ca_cert,
    )
    layers = [make_layer({"expiring": b"token\n"}), make_layer({"two": b"2\n"})]
    push_recorded(pusher, "public/expiring", "1", layers, make_config(layers))
    token_server.expires_in = 1
    token_server.clear()
    options = dgetkit.Options(ca_cert=str(token_registry.ca_cert))
    ref = f"{token_registry.host}/public/expiring:1"
    image = dgetkit.resolve(ref, options=options)
    time.sleep(2.5)  # the token the client holds is now refused by the registry
    dgetkit.pull(
        image.reference,
        tmp_path / "t.tar",
        progress=False,
        cache=False,
        options=options,
    )
    assert len(token_server.token_requests("public/expiring")) >= 2


def test_interrupted_pull_continues_where_it_stopped(fault_proxy, big_image, tmp_path):
    proxy = fault_proxy()
    cache = Cache(tmp_path / "cache")
    total = sum(layer.size for layer in big_image["layers"])

    class Interrupt:
        total, n = None, 0

        def update(self, n):
            self.n += n
            if self.n > half_of(big_image):
                raise KeyboardInterrupt

        def close(self):
            pass

    with pytest.raises(KeyboardInterrupt):
        pull_through(proxy, tmp_path / "out.tar", cache, progress=Interrupt(), jobs=1)
    assert not (tmp_path / "out.tar").exists()
    first = proxy.blob_bytes()
    partial = sum(r["size"] for r in cache.entries() if r["kind"] == "partial")
    assert partial > 0

    proxy.clear()
    pull_through(proxy, tmp_path / "out.tar", cache)
    check_complete(tmp_path / "out.tar", big_image)
    second = proxy.blob_bytes()
    assert second <= total - partial + 64 * 1024
    assert first + second < total * 1.5


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        check=False,
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_disk_full_leaves_nothing(fault_proxy, big_image, tmp_path, small_disk):
    proxy = fault_proxy()
    out = small_disk / "out.tar"
    with pytest.raises(errors.DiskFull, match="disk"):
        pull_through(proxy, out, tmp_path / "cache")
    assert list(small_disk.iterdir()) == []
    with pytest.raises(errors.DiskFull, match="cache"):
        pull_through(proxy, tmp_path / "o.tar", small_disk / "cache")


def test_read_only_folder(fault_proxy, big_image, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
            check=False,
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        with pytest.raises(errors.OutputError):
            pull_through(fault_proxy(), folder / "x.tar", tmp_path / "cache")
    finally:
        subprocess.run(["umount", str(folder)], check=False)


# -- bad input, each a named error ---------------------------------------------------

SCHEMA1 = json.dumps({"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": []})
PLUGIN = json.dumps(
    {"schemaVersion": 2, "mediaType": "application/vnd.docker.plugin.v1+json"}
)
HUGE = b'{"schemaVersion": 2, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'

PROXIED_BAD = [
    (
        "schema1",
        fp.status(
            200,
            {
                "Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"
            },
            SCHEMA1.encode(),
        ),
        errors.Schema1NotSupported,
        "schema 1",
    ),
    (
        "plugin",
        fp.status(
            200,
            {"Content-Type": "application/vnd.docker.plugin.v1+json"},
            PLUGIN.encode(),
        ),
        errors.UnsupportedMediaType,
        "not a container image",
    ),
    (
        "huge-manifest",
        fp.status(
            200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, HUGE
        ),
        errors.ContentTooLarge,
        "larger than",
    ),
    (
        "html-page",
        fp.status(200, {"Content-Type": "text/html"}, b"<html>login</html>"),
        errors.DgetkitError,
        "not valid JSON",
    ),
]


@pytest.mark.parametrize(
    "fault, error, words", [c[1:] for c in PROXIED_BAD], ids=[c[0] for c in PROXIED_BAD]
)
def test_bad_manifests(fault_proxy, big_image, tmp_path, fault, error, words):
    proxy = fault_proxy()
    proxy.add(fault, path=fp.MANIFEST_PATH)
    with pytest.raises(error, match=words):
        pull_through(proxy, tmp_path / "out.tar", tmp_path / "cache")
    assert not (tmp_path / "out.tar").exists()


def test_digest_pin_verifies_manifest_bytes(fault_proxy, big_image, tmp_path):
    proxy = fault_proxy()
    proxy.add(fp.flip(20), path=fp.MANIFEST_PATH)
    with pytest.raises(errors.DigestMismatch, match=big_image["digest"]):
        dgetkit.pull(
            f"{proxy.host}/big/layer@{big_image['digest']}",
            tmp_path / "x.tar",
            progress=False,
            cache=False,
        )


def test_tls_failure_suggests_ca_cert(token_registry, tmp_path):
    with pytest.raises(errors.TLSVerificationError, match="--ca-cert"):
        dgetkit.pull(
            f"{token_registry.host}/public/app:1",
            tmp_path / "x.tar",
            progress=False,
            cache=False,
        )


def test_unreachable_registry(tmp_path, sleeps):
    with pytest.raises(errors.RegistryUnreachable, match="cannot reach"):
        dgetkit.pull("127.0.0.1:9/x/y:1", tmp_path / "x.tar", progress=False)
    assert not (tmp_path / "x.tar").exists()


# -- secrets never leak ----------------------------------------------------------------


def test_no_secret_in_any_output(
    basic_registry, token_registry, token_server, tmp_path, caplog, capsys, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    secrets = [basic_registry.password, token_registry.password]
    seen: list[str] = []
    pusher = Pusher(
        token_registry.url,
        auth=(token_registry.username, token_registry.password),
        verify=token_registry.ca_cert,
    )
    layers = [make_layer({"s": b"secret\n"})]
    push_recorded(pusher, "private/secret", "1", layers, make_config(layers))
    ca = str(token_registry.ca_cert)
    with dgetkit.record() as transcript:
        dgetkit.pull(
            f"{token_registry.host}/private/secret:1",
            tmp_path / "a.tar",
            progress=False,
            cache=False,
            ca_cert=ca,
            username=token_registry.username,
            password=token_registry.password,
        )
        for password in ("wrong-password-xyz", basic_registry.password + "x"):
            secrets.append(password)
            try:
                dgetkit.pull(
                    f"{basic_registry.host}/none/here:1",
                    tmp_path / "b.tar",
                    progress=False,
                    cache=False,
                    username=basic_registry.username,
                    password=password,
                )
            except errors.DgetkitError as err:
                seen += [str(err), repr(err), repr(err.__dict__)]
    client = dgetkit.registry.client_for(
        token_registry.host,
        dgetkit.Options(
            ca_cert=ca,
            username=token_registry.username,
            password=token_registry.password,
        ),
    )
    tokens = [t.value for t in client._tokens._tokens.values()]
    assert tokens, "the pull should have used a token"
    secrets += tokens
    seen += [
        caplog.text,
        transcript.frame().to_string(),
        repr(transcript.exchanges),
        *capsys.readouterr(),
        repr(client.options),
        repr(client.credentials),
    ]
    found = [s for s in secrets for text in seen if s in text]
    assert found == []
    assert "<redacted>" in transcript.frame()["authorization"].str.cat()


def test_concurrent_pulls_download_each_blob_once(fault_proxy, big_image, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    proxy = fault_proxy()
    cache = Cache(tmp_path / "cache")
    outs = [tmp_path / f"{n}.tar" for n in range(3)]
    with ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(pull_through, proxy, out, cache) for out in outs]:
            future.result()
    for out in outs:
        check_complete(out, big_image)
    layers = sum(layer.size for layer in big_image["layers"])
    assert proxy.blob_bytes(big_image["layer_digests"]) == layers


def test_flipped_byte_in_compressible_layer(registry, fault_proxy, tmp_path):
    """Corruption that breaks the decompressor is still reported by digest."""
    text = b"".join(b"line %d of a compressible layer\n" % n for n in range(80_000))
    layers = [make_layer({"text": text})]
    record = push_recorded(
        Pusher(registry.url), "zip/text", "1", layers, make_config(layers)
    )
    proxy = fault_proxy()
    proxy.add(fp.flip(1000), path=f"/blobs/{record['layer_digests'][0]}$", times=10)
    with pytest.raises(errors.DigestMismatch, match=record["layer_digests"][0]):
        dgetkit.pull(
            f"{proxy.host}/zip/text:1", tmp_path / "z.tar", progress=False, cache=False
        )
    assert not (tmp_path / "z.tar").exists()
