"""Benchmark ``dgetkit pull`` against ``skopeo copy`` on a local registry.

Run it from a clone after ``pip install .``::

    python benchmarks/bench.py              # full run: ~1 GiB image, 5 rounds
    python benchmarks/bench.py --quick      # a few MiB, one round: smoke test

It starts its own ``docker-registry`` on 127.0.0.1 (storage in a temporary
folder), builds a seeded image of 8 gzip layers mixing random and compressible
data (kept under ``--work-dir`` so later runs skip the build), pushes it, and
then runs, interleaved round by round, ``dgetkit pull`` (default layout, then
a warm re-pull from the same cache), ``dgetkit pull --compressed-layers`` (the
same) and ``skopeo copy ... docker-archive:``, each with a fresh cache and its
output deleted afterwards. Every child runs under a tiny launcher that reports
wall time, CPU time and peak RSS from ``wait4``, so the benchmark's own memory
never leaks into the child's ``ru_maxrss``.

It also measures the ``.tar.gz`` output against the standard ``gzip`` module,
peak RSS for single-layer images of 100 MiB and 1 GiB, and the machine's
limits (loopback download, sha256, gunzip with isal and zlib, disk write with
fsync), and prints the targets of issue 5 next to the measured values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

MiB = 1 << 20
CHUNK = MiB
DEFAULT_SEED = 20240501
DEFAULT_SIZE_MIB = 1024
DEFAULT_ROUNDS = 5
DEFAULT_RSS_SIZES_MIB = (100, 1024)
#: Relative sizes of the 8 layers, and the share of random bytes in each.
LAYER_WEIGHTS = (5, 7, 9, 11, 13, 15, 17, 19)
RANDOM_SHARES = (0.35, 0.65, 0.4, 0.6, 0.45, 0.55, 0.5, 0.5)
FILE_SIZE = 4 * MiB
#: The level Docker's Go ``compress/gzip`` uses by default, for realistic layers.
BUILD_GZIP_LEVEL = 6
CREATED = "2024-05-01T00:00:00Z"
MTIME = 1714521600
BUILD_FORMAT = 1
REGISTRY_START_TIMEOUT = 20.0
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: Issue 5's targets, all "at most": label, limit, unit.
TARGETS = {
    "default": ("default layout / skopeo (median wall)", 0.30, "x"),
    "compressed": ("compressed layers / skopeo (median wall)", 0.12, "x"),
    "warm": ("warm re-pull / cold pull (default layout)", 0.10, "x"),
    "rss": ("peak RSS, 8-layer image (default layout)", 100, "MiB"),
    "rss-single": ("peak RSS, single {size:g} MiB layer", 100, "MiB"),
    "gzip": (".tar.gz pull / stdlib gzip -9 of the tar", 0.50, "x"),
}

# The launcher: a small process that spawns the measured command, so that the
# child's ru_maxrss (which the kernel seeds with the parent's RSS at exec) is
# at most the launcher's few MiB, and reports what wait4 saw as one JSON line.
LAUNCHER = """
import json, os, sys, time
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
actions = [(os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)]
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                  "sys": usage.ru_stime,
                  "rss_kib": usage.ru_maxrss,
                  "code": os.waitstatus_to_exitcode(status)}))
"""


# -- building the image ------------------------------------------------------------


@dataclass
class Layer:
    """A built gzip layer on disk."""

    path: str
    digest: str
    diff_id: str
    size: int
    uncompressed: int


@dataclass
class ImageSpec:
    """What to build: a name, layer sizes in bytes and random shares."""

    name: str
    sizes: tuple
    shares: tuple

    def key(self, seed: int) -> str:
        text = json.dumps([BUILD_FORMAT, seed, self.name, self.sizes, self.shares])
        return f"{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def main_spec(size_mib: float) -> ImageSpec:
    """The 8-layer image of about ``size_mib`` MiB uncompressed."""
    total = sum(LAYER_WEIGHTS)
    sizes = tuple(int(size_mib * MiB * w / total) for w in LAYER_WEIGHTS)
    return ImageSpec("app", sizes, RANDOM_SHARES)


def single_spec(size_mib: float) -> ImageSpec:
    """A one-layer image of ``size_mib`` MiB uncompressed, half random."""
    return ImageSpec(f"one{size_mib:g}", (int(size_mib * MiB),), (0.5,))


class _Text:
    """Compressible, log-like lines drawn from a small seeded pool."""

    def __init__(self, rng: random.Random):
        letters = b"abcdefghijklmnopqrstuvwxyz"
        words = [bytes(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(900)]
        self.lines = [
            b" ".join(rng.choices(words, k=rng.randint(4, 14)))
            + b" %d\n" % rng.randrange(10**6)
            for _ in range(512)
        ]
        self.rng = rng

    def bytes(self, size: int) -> bytes:
        picks = memoryview(self.rng.randbytes(2 * (size // 40 + 1))).cast("H")
        return b"".join([self.lines[i & 511] for i in picks])[:size]


def _file_kinds(size: int, share: float) -> list[tuple[str, int]]:
    """Split ``size`` bytes into files, random or text, ``share`` of them random."""
    files, random_bytes, done = [], 0, 0
    while done < size:
        n = min(FILE_SIZE, size - done)
        kind = "bin" if random_bytes < share * (done + n) - n / 2 else "txt"
        random_bytes += n if kind == "bin" else 0
        files.append((kind, n))
        done += n
    return files


class _LayerWriter:
    """A gzip stream to a file, hashing both sides as bytes pass."""

    def __init__(self, handle):
        self.handle = handle
        self.compressor = zlib.compressobj(BUILD_GZIP_LEVEL, zlib.DEFLATED, 31)
        self.compressed = hashlib.sha256()
        self.uncompressed = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> None:
        self.uncompressed.update(data)
        self.count += len(data)
        self._out(self.compressor.compress(data))

    def _out(self, data: bytes) -> None:
        self.compressed.update(data)
        self.handle.write(data)

    def finish(self) -> None:
        self._out(self.compressor.flush())


def _tar_header(name: str, size: int, kind=tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type = size, MTIME, kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info.tobuf(tarfile.PAX_FORMAT)


def build_layer(path: Path, seed: int, spec: ImageSpec, index: int) -> Layer:
    """Stream one seeded gzip layer to ``path``; never whole in memory."""
    rng = random.Random(f"{seed}/{spec.name}/{index}")
    text = _Text(rng)
    folder = f"bench/{spec.name}-{index:02d}/"
    temp = path.with_suffix(".tmp")
    with open(temp, "wb") as handle:
        out = _LayerWriter(handle)
        out.write(_tar_header("bench/", 0, tarfile.DIRTYPE))
        out.write(_tar_header(folder, 0, tarfile.DIRTYPE))
        files = _file_kinds(spec.sizes[index], spec.shares[index])
        for number, (kind, size) in enumerate(files):
            out.write(_tar_header(f"{folder}{number:04d}.{kind}", size))
            out.write(rng.randbytes(size) if kind == "bin" else text.bytes(size))
            out.write(b"\0" * (-size % 512))
        out.write(b"\0" * 1024)
        out.write(b"\0" * (-out.count % (20 * 512)))
        out.finish()
    os.replace(temp, path)
    return Layer(
        str(path),
        "sha256:" + out.compressed.hexdigest(),
        "sha256:" + out.uncompressed.hexdigest(),
        path.stat().st_size,
        out.count,
    )


def built_layers(work: Path, seed: int, spec: ImageSpec) -> list[Layer]:
    """The layers of ``spec``, from the work folder or built now (in parallel)."""
    folder = work / "layers" / spec.key(seed)
    index_file = folder / "layers.json"
    if index_file.is_file():
        rows = json.loads(index_file.read_text())
        layers = [Layer(**{**row, "path": str(folder / row["path"])}) for row in rows]
        if all(Path(layer.path).is_file() for layer in layers):
            return layers
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = [
            pool.submit(build_layer, folder / f"layer-{i}.tar.gz", seed, spec, i)
            for i in range(len(spec.sizes))
        ]
        layers = [future.result() for future in futures]
    rows = [{**asdict(layer), "path": Path(layer.path).name} for layer in layers]
    index_file.write_text(json.dumps(rows))
    _say(f"built {spec.name} in {time.perf_counter() - started:.1f}s -> {folder}")
    return layers


def image_config(layers: list[Layer]) -> bytes:
    """A minimal image config for this machine's architecture."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    config = {
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": CREATED, "created_by": f"bench layer {i}"}
            for i in range(len(layers))
        ],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


# -- the registry ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Registry:
    """A plain-HTTP ``docker-registry`` on 127.0.0.1 with storage in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.process = None

    def __enter__(self):
        config = {
            "version": "0.1",
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.folder / "storage")}},
            "http": {"addr": self.host},
        }
        path = self.folder / "config.yml"
        path.write_text(json.dumps(config))
        with open(self.folder / "registry.log", "ab") as log:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait()
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + REGISTRY_START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(self.url + "/v2/", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        self.__exit__()
        raise SystemExit(f"docker-registry did not start; see {self.folder}")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def push_blob(session, registry: Registry, repo: str, digest: str, body) -> None:
    """A monolithic upload: POST for a session, then PUT streaming ``body``."""
    base = f"{registry.url}/v2/{repo}/blobs"
    if session.head(f"{base}/{digest}").status_code == 200:
        return
    started = session.post(f"{base}/uploads/")
    started.raise_for_status()
    location = requests.compat.urljoin(registry.url, started.headers["Location"])
    done = session.put(location, params={"digest": digest}, data=body)
    done.raise_for_status()


def push_image(registry: Registry, repo: str, layers: list[Layer]) -> str:
    """Push ``layers``, a config and a Docker v2 manifest; return the reference."""
    config = image_config(layers)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    with requests.Session() as session:
        for layer in layers:
            with open(layer.path, "rb") as body:
                push_blob(session, registry, repo, layer.digest, body)
        push_blob(session, registry, repo, config_digest, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": _descriptor(DOCKER_CONFIG, config_digest, len(config)),
            "layers": [
                _descriptor(DOCKER_LAYER, layer.digest, layer.size) for layer in layers
            ],
        }
        answer = session.put(
            f"{registry.url}/v2/{repo}/manifests/1",
            data=json.dumps(manifest).encode(),
            headers={"Content-Type": DOCKER_MANIFEST},
        )
        answer.raise_for_status()
    return f"{registry.host}/{repo}:1"


def _descriptor(media_type: str, digest: str, size: int) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size}


# -- running and measuring a child -------------------------------------------------


@dataclass
class Run:
    """One measured run of a command."""

    label: str
    round: int
    wall: float
    cpu: float
    rss_mib: float
    sys: float = 0.0
    out_bytes: int = 0
    in_bytes: int = 0


class Runner:
    """Runs commands under the launcher, in a scratch folder."""

    def __init__(self, scratch: Path, python: str):
        self.scratch = scratch
        self.python = python
        self.env = dict(os.environ, TMPDIR=str(scratch / "tmp"))
        self.sizes: dict[str, int] = {}  # reference -> compressed bytes
        self.diff_ids: dict[str, list[str]] = {}  # reference -> its layers' diff_ids
        (scratch / "tmp").mkdir(parents=True, exist_ok=True)

    def measure(self, label: str, round_: int, command: list[str], ref="") -> Run:
        """Run ``command``; dirty pages of earlier runs are flushed first."""
        log = self.scratch / "child.log"
        os.sync()
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(log)]
        done = subprocess.run(
            launcher + command,
            env=self.env,
            cwd=self.scratch,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not done.stdout.strip():
            raise SystemExit(f"launcher failed: {done.stderr}")
        result = json.loads(done.stdout)
        if result["code"] != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{label} failed ({result['code']}): {command}\n{tail}")
        rss = result["rss_kib"] / 1024
        packed = self.sizes.get(ref, 0)
        return Run(
            label,
            round_,
            result["wall"],
            result["cpu"],
            rss,
            sys=result["sys"],
            in_bytes=packed,
        )

    def dgetkit(self, ref: str, out: Path, cache: Path, extra=()) -> list[str]:
        return [
            self.python,
            "-m",
            "dgetkit.cli",
            "pull",
            ref,
            "-o",
            str(out),
            "--cache",
            str(cache),
            "--no-progress",
            *extra,
        ]


def skopeo_command(ref: str, out: Path) -> list[str]:
    """The issue's ``skopeo copy`` (without a policy file, skip the policy check)."""
    policies = (
        Path("/etc/containers/policy.json"),
        Path.home() / ".config/containers/policy.json",
    )
    policy = [] if any(p.is_file() for p in policies) else ["--insecure-policy"]
    return [
        "skopeo",
        *policy,
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        f"docker://{ref}",
        f"docker-archive:{out}",
    ]


def check_archive(path: Path, diff_ids: list[str]) -> None:
    """Stop unless the archive's layer files hash to the image's diff_ids."""
    with tarfile.open(path) as tar:
        (item,) = json.loads(tar.extractfile("manifest.json").read())
        for name, diff_id in zip(item["Layers"], diff_ids, strict=True):
            digest, source = hashlib.sha256(), tar.extractfile(name)
            while chunk := source.read(CHUNK):
                digest.update(chunk)
            if "sha256:" + digest.hexdigest() != diff_id:
                raise SystemExit(f"{path}: {name} does not match diff_id {diff_id}")


def _take_output(run: Run, out: Path, keep: Path | None = None) -> Run:
    run.out_bytes = out.stat().st_size
    if keep is not None:
        os.replace(out, keep)
    else:
        out.unlink()
    return run


def pull_pair(runner: Runner, label: str, round_: int, ref: str, extra=()):
    """A cold pull and a warm re-pull from the same cache; both cleaned up."""
    out = runner.scratch / "out" / "image.tar"
    cache = runner.scratch / f"cache-{label}-{round_}"
    runs = []
    for phase in ("", " warm"):
        command = runner.dgetkit(ref, out, cache, extra)
        run = runner.measure(label + phase, round_, command, ref)
        if round_ == 1 and not phase and not extra:
            check_archive(out, runner.diff_ids[ref])
            _say("  checked: every layer of the archive matches its diff_id")
        runs.append(_take_output(run, out))
    shutil.rmtree(cache)
    return runs


def cold_pull(
    runner: Runner,
    label: str,
    round_: int,
    ref: str,
    out_name: str,
    extra=(),
    keep: Path | None = None,
) -> Run:
    out = runner.scratch / "out" / out_name
    cache = runner.scratch / f"cache-{label}-{round_}"
    run = runner.measure(label, round_, runner.dgetkit(ref, out, cache, extra), ref)
    shutil.rmtree(cache)
    return _take_output(run, out, keep)


def skopeo_pull(runner: Runner, round_: int, ref: str) -> Run:
    out = runner.scratch / "out" / "skopeo.tar"
    run = runner.measure("skopeo", round_, skopeo_command(ref, out), ref)
    return _take_output(run, out)


# -- the machine's limits ----------------------------------------------------------


def _rate(size: int, seconds: float) -> float:
    return size / MiB / seconds if seconds > 0 else float("inf")


def loopback_speed(registry: Registry, repo: str, layers: list[Layer]) -> float:
    """MiB/s of plain ``requests`` streaming the layer blobs one after another."""
    started, total = time.perf_counter(), 0
    with requests.Session() as session:
        for layer in layers:
            url = f"{registry.url}/v2/{repo}/blobs/{layer.digest}"
            with session.get(url, stream=True) as response:
                response.raise_for_status()
                while chunk := response.raw.read(CHUNK):
                    total += len(chunk)
    return _rate(total, time.perf_counter() - started)


def sha256_speed(size: int) -> float:
    block = random.Random(1).randbytes(CHUNK)
    digest, started = hashlib.sha256(), time.perf_counter()
    for _ in range(size // CHUNK):
        digest.update(block)
    return _rate(size // CHUNK * CHUNK, time.perf_counter() - started)


def gunzip_speed(layers: list[Layer], module) -> float:
    """Uncompressed MiB/s of ``module.decompressobj`` over the layer files."""
    total, elapsed = 0, 0.0
    for layer in layers:
        with open(layer.path, "rb") as handle:
            started = time.perf_counter()
            inflater = module.decompressobj(31)
            while chunk := handle.read(CHUNK):
                total += len(inflater.decompress(chunk))
            elapsed += time.perf_counter() - started
    return _rate(total, elapsed)


def disk_speed(folder: Path, size: int) -> float:
    """MiB/s writing ``size`` bytes in 1 MiB chunks, fsync included."""
    block = random.Random(2).randbytes(CHUNK)
    path = folder / "disk-test.bin"
    os.sync()
    started = time.perf_counter()
    with open(path, "wb", buffering=0) as handle:
        handle.writelines(block for _ in range(max(1, size // CHUNK)))
        os.fsync(handle.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return _rate(max(1, size // CHUNK) * CHUNK, elapsed)


def machine_limits(registry, repo, layers, scratch: Path, size: int) -> dict:
    try:
        from isal import isal_zlib
    except ImportError:
        isal_zlib = None
    limits = {
        "loopback download": loopback_speed(registry, repo, layers),
        "sha256": sha256_speed(size),
        "gunzip zlib": gunzip_speed(layers, zlib),
        "disk write + fsync": disk_speed(scratch, min(size, 1024 * MiB)),
    }
    if isal_zlib is not None:
        limits["gunzip isal"] = gunzip_speed(layers, isal_zlib)
    return limits


def print_limits(limits: dict, layers: list[Layer]) -> None:
    packed = sum(layer.size for layer in layers) / MiB
    unpacked = sum(layer.uncompressed for layer in layers) / MiB
    print("\n== machine limits")
    for name, rate in limits.items():
        print(f"  {name:22} {rate:8.0f} MiB/s")
    for codec in ("isal", "zlib"):
        gunzip = limits.get(f"gunzip {codec}")
        if gunzip is None:
            continue
        one = (
            packed / limits["sha256"]
            + unpacked / gunzip
            + unpacked / limits["sha256"]
            + unpacked / limits["disk write + fsync"]
        )
        print(
            f"  pipeline floor ({codec}: sha256, gunzip, sha256, write): "
            f"{one:.2f}s on one core, {one / 2:.2f}s shared by two"
        )
    print(
        f"  download floor: {packed / limits['loopback download']:.2f}s "
        f"for {packed:.0f} MiB"
    )


# -- reporting ---------------------------------------------------------------------


def _versions(python: str, cwd: Path) -> str:
    """Where the measured dgetkit is imported from, and skopeo's version."""
    code = "import dgetkit, os; print(os.path.dirname(dgetkit.__file__))"
    found = [
        subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
        for command in ([python, "-c", code], ["skopeo", "--version"])
    ]
    return f"dgetkit in {found[0].stdout.strip()}; {found[1].stdout.strip()}"


def _load() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews timings."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _say(message: str) -> None:
    print(message, flush=True)


def _median(runs: list[Run], label: str, field: str = "wall") -> float:
    values = [getattr(run, field) for run in runs if run.label == label]
    return statistics.median(values) if values else float("nan")


def _in_rate(run: Run) -> str:
    return f"{_rate(run.in_bytes, run.wall):6.0f}" if run.in_bytes else "     -"


def print_rounds(title: str, runs: list[Run], ratios: bool = True) -> None:
    print(f"\n== {title} (in = compressed MiB/s, out = archive MiB/s)")
    print(
        f"  {'round':>5} {'run':24} {'wall s':>7} {'cpu s':>7} {'sys s':>6} "
        f"{'rss MiB':>8} {'in':>6} {'out':>6} {'/skopeo' if ratios else '':>8}"
    )
    skopeo = {run.round: run.wall for run in runs if run.label == "skopeo"}
    for run in runs:
        ratio = f"{run.wall / skopeo[run.round]:8.3f}" if ratios else ""
        print(
            f"  {run.round:>5} {run.label:24} {run.wall:7.2f} {run.cpu:7.2f} "
            f"{run.sys:6.2f} {run.rss_mib:8.1f} {_in_rate(run)} "
            f"{_rate(run.out_bytes, run.wall):6.0f} {ratio}"
        )


def print_medians(runs: list[Run]) -> dict:
    labels = list(dict.fromkeys(run.label for run in runs))
    print("\n== medians over the rounds")
    print(
        f"  {'run':24} {'wall s':>7} {'cpu s':>7} {'rss MiB':>8} {'in MiB/s':>9} "
        f"{'/skopeo':>8} {'median of per-round /skopeo':>28}"
    )
    skopeo = _median(runs, "skopeo")
    medians = {}
    for label in labels:
        wall = _median(runs, label)
        medians[label] = wall
        packed = next(run.in_bytes for run in runs if run.label == label)
        print(
            f"  {label:24} {wall:7.2f} {_median(runs, label, 'cpu'):7.2f} "
            f"{_median(runs, label, 'rss_mib'):8.1f} {_rate(packed, wall):9.0f} "
            f"{wall / skopeo:8.3f} {_round_ratios(runs, label):28.3f}"
        )
    return medians


def _round_ratios(runs: list[Run], label: str) -> float:
    skopeo = {run.round: run.wall for run in runs if run.label == "skopeo"}
    ratios = [
        r.wall / skopeo[r.round] for r in runs if r.label == label and r.round in skopeo
    ]
    return statistics.median(ratios) if ratios else float("nan")


def print_targets(values: dict) -> None:
    """``values`` maps a TARGETS key (``rss-single:<size>`` for those) to a value."""
    print("\n== issue 5 targets")
    for key, value in values.items():
        kind, _, size = key.partition(":")
        name, limit, unit = TARGETS[kind]
        name = name.format(size=float(size or 0))
        verdict = "met" if value <= limit else "NOT met"
        shown = f"{value:.3f}x" if unit == "x" else f"{value:.1f} MiB"
        print(
            f"  {name:44} target <= {limit:g}{unit:4} measured {shown:>10}  {verdict}"
        )


# -- the whole benchmark -----------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument(
        "--size",
        type=float,
        default=DEFAULT_SIZE_MIB,
        help="uncompressed image size in MiB (default 1024)",
    )
    parser.add_argument(
        "--rss-sizes",
        default=",".join(map(str, DEFAULT_RSS_SIZES_MIB)),
        help="single-layer image sizes in MiB for the RSS check",
    )
    parser.add_argument(
        "--gzip-rounds",
        type=int,
        default=3,
        help="cold .tar.gz pulls to take the median of",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--jobs", type=int, help="pass --jobs to dgetkit")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter whose dgetkit is measured",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dgetkit-bench",
        help="keeps built layers between runs; scratch goes here",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 8 MiB image, one round, tiny RSS images",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.rss_sizes, args.gzip_rounds = 8, 1, "2,4", 1
    return args


def run_rounds(runner: Runner, ref: str, rounds: int, extra: tuple) -> list[Run]:
    runs = []
    for round_ in range(1, rounds + 1):
        runs += pull_pair(runner, "dgetkit", round_, ref, extra)
        runs += pull_pair(
            runner, "dgetkit -c", round_, ref, extra + ("--compressed-layers",)
        )
        runs.append(skopeo_pull(runner, round_, ref))
        last = runs[-5:]
        _say(
            f"  round {round_}: " + ", ".join(f"{r.label} {r.wall:.2f}s" for r in last)
        )
    return runs


def gzip_output(runner: Runner, ref: str, rounds: int, extra: tuple) -> dict:
    """dgetkit's ``.tar.gz`` pull against stdlib gzip (default level 9) of the tar."""
    tar = runner.scratch / "reference.tar"
    cold_pull(runner, "dgetkit tar", 0, ref, "image.tar", extra, keep=tar)
    runs = [
        cold_pull(runner, "dgetkit .tar.gz", r, ref, "image.tar.gz", extra)
        for r in range(1, rounds + 1)
    ]
    code = (
        "import gzip, shutil, sys\n"
        "with open(sys.argv[1], 'rb') as s, gzip.open(sys.argv[2], 'wb') as t:\n"
        "    shutil.copyfileobj(s, t, 1 << 20)\n"
    )
    out = runner.scratch / "out" / "stdlib.tar.gz"
    stdlib = runner.measure(
        "stdlib gzip -9", 0, [sys.executable, "-c", code, str(tar), str(out)]
    )
    _take_output(stdlib, out)
    tar.unlink()
    return {"runs": runs, "stdlib": stdlib}


def rss_images(runner: Runner, refs: dict, extra: tuple) -> list[Run]:
    runs = []
    for size, ref in refs.items():
        runs.append(
            cold_pull(runner, f"1 layer {size:g} MiB", 0, ref, "one.tar", extra)
        )
        runs.append(
            cold_pull(
                runner,
                f"1 layer {size:g} MiB -c",
                0,
                ref,
                "one.tar",
                extra + ("--compressed-layers",),
            )
        )
    return runs


def benchmark(args: argparse.Namespace) -> None:
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    rss_sizes = [float(s) for s in args.rss_sizes.split(",") if s]
    layers = built_layers(work, args.seed, main_spec(args.size))
    singles = {s: built_layers(work, args.seed, single_spec(s)) for s in rss_sizes}
    packed = sum(layer.size for layer in layers)
    unpacked = sum(layer.uncompressed for layer in layers)
    extra = ("--jobs", str(args.jobs)) if args.jobs else ()
    _say(
        f"image: {len(layers)} gzip layers, {packed / MiB:.0f} MiB compressed, "
        f"{unpacked / MiB:.0f} MiB uncompressed (seed {args.seed}); "
        f"{os.cpu_count()} cores; load average {_load()};\n"
        f"{_versions(args.python, work)}"
    )
    with tempfile.TemporaryDirectory(prefix="run-", dir=work) as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "out").mkdir()
        with Registry(scratch) as registry:
            _run_all(args, registry, scratch, layers, singles, extra)


def _run_all(args, registry, scratch, layers, singles, extra) -> None:
    started = time.perf_counter()
    ref = push_image(registry, "bench/app", layers)
    single_refs = {
        s: push_image(registry, f"bench/one-{i}", found)
        for i, (s, found) in enumerate(singles.items())
    }
    _say(f"pushed to {registry.url} in {time.perf_counter() - started:.1f}s")
    limits = machine_limits(
        registry,
        "bench/app",
        layers,
        scratch,
        sum(layer.uncompressed for layer in layers),
    )
    print_limits(limits, layers)
    runner = Runner(scratch, args.python)
    runner.sizes[ref] = sum(layer.size for layer in layers)
    runner.diff_ids[ref] = [layer.diff_id for layer in layers]
    for size, single in single_refs.items():
        runner.sizes[single] = sum(layer.size for layer in singles[size])
    _say(f"\n== {args.rounds} interleaved rounds")
    runs = run_rounds(runner, ref, args.rounds, extra)
    gz = gzip_output(runner, ref, args.gzip_rounds, extra)
    singles_runs = rss_images(runner, single_refs, extra)
    print_rounds(f"{args.rounds} interleaved rounds, cold cache unless 'warm'", runs)
    others = gz["runs"] + [gz["stdlib"]] + singles_runs
    print_rounds("other runs (cold cache)", others, ratios=False)
    medians = print_medians(runs)
    values = _target_values(runs, medians, gz, singles_runs, list(singles))
    _print_extras(medians, gz, values)
    print_targets(values)
    _say(
        f"\nbenchmark took {time.perf_counter() - started:.0f}s after the build; "
        f"load average now {_load()}"
    )


def _target_values(runs, medians, gz, singles_runs, sizes) -> dict:
    gz_wall = statistics.median(run.wall for run in gz["runs"])
    values = {
        "default": medians["dgetkit"] / medians["skopeo"],
        "compressed": medians["dgetkit -c"] / medians["skopeo"],
        "warm": medians["dgetkit warm"] / medians["dgetkit"],
        "rss": _median(runs, "dgetkit", "rss_mib"),
    }
    for size in sizes:
        label = f"1 layer {size:g} MiB"
        values[f"rss-single:{size:g}"] = _median(singles_runs, label, "rss_mib")
    values["gzip"] = gz_wall / gz["stdlib"].wall
    return values


def _print_extras(medians: dict, gz: dict, values: dict) -> None:
    gz_wall = statistics.median(run.wall for run in gz["runs"])
    print("\n== warm re-pull and .tar.gz")
    for label in ("dgetkit", "dgetkit -c"):
        warm = medians[f"{label} warm"]
        print(
            f"  {label:12} warm {warm:6.2f}s  cold {medians[label]:6.2f}s  "
            f"warm/cold {warm / medians[label]:.3f}"
        )
    print(
        f"  dgetkit .tar.gz pull (median of {len(gz['runs'])}) {gz_wall:6.2f}s; "
        f"stdlib gzip level 9 of the same tar {gz['stdlib'].wall:6.2f}s "
        f"(cpu {gz['stdlib'].cpu:.2f}s); ratio {values['gzip']:.3f}"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    for tool in ("docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed; the benchmark needs it")
    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
