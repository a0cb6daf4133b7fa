"""Load and inspect archives with real tools: podman 4.3 and skopeo 1.9.

podman keeps its state under the given work folder: the ``vfs`` storage
(no kernel overlay needed, works as root in a container), its
temp folder (``--tmpdir`` and ``TMPDIR``, which ``oci-archive`` unpacking
uses) and a ``storage.conf`` of its own, so a host configuration cannot leak
in. ``--cgroup-manager cgroupfs`` and ``--events-backend file`` keep it away
from systemd and journald. Only the run root is elsewhere (podman wants
a short path, see :func:`podman_runroot`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

PODMAN = "podman"
SKOPEO = "skopeo"
TOOL_TIMEOUT = 300
LOADED_PREFIX = "Loaded image"


class LoaderError(RuntimeError):
    """A loader command failed; the message holds its command line and stderr."""


def _run(command: list[str], *, env=None, timeout=TOOL_TIMEOUT) -> str:
    done = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise LoaderError(
            f"{' '.join(command)} exited with {done.returncode}:\n"
            f"{done.stderr.strip()}\n{done.stdout.strip()}"
        )
    return done.stdout


def podman_runroot(workdir) -> Path:
    """Return the run root podman uses for ``workdir``.

    podman 4.3 refuses a run root longer than 50 characters ("the specified
    runroot is longer than 50 characters"), so it lives in ``/tmp`` under a
    name derived from ``workdir``; :func:`podman_cleanup` removes it.
    """
    key = hashlib.sha256(str(Path(workdir).resolve()).encode()).hexdigest()[:16]
    return Path("/tmp") / f"dgetkit-podman-{key}"


def podman_cleanup(workdir) -> None:
    """Remove the run root of ``workdir`` (the rest lives inside ``workdir``)."""
    shutil.rmtree(podman_runroot(workdir), ignore_errors=True)


def _podman_dirs(workdir) -> dict[str, Path]:
    base = Path(workdir) / "podman"
    return {"root": base / "root", "run": podman_runroot(workdir), "tmp": base / "tmp"}


def podman_env(workdir) -> dict[str, str]:
    """Create ``workdir``'s podman folders; return the environment to run with."""
    dirs = _podman_dirs(workdir)
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    conf = Path(workdir) / "podman" / "storage.conf"
    if not conf.exists():
        conf.write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{dirs["root"]}"\n'
            f'runroot = "{dirs["run"]}"\n'
        )
    return os.environ | {
        "CONTAINERS_STORAGE_CONF": str(conf),
        "TMPDIR": str(dirs["tmp"]),
    }


def podman_command(workdir) -> list[str]:
    """Return ``podman`` with the global flags that keep its state in ``workdir``.

    Examples
    --------
    >>> podman_command("/tmp/w")[:3]
    ['podman', '--storage-driver', 'vfs']
    """
    dirs = _podman_dirs(workdir)
    return [
        PODMAN,
        "--storage-driver",
        "vfs",
        "--root",
        str(dirs["root"]),
        "--runroot",
        str(dirs["run"]),
        "--tmpdir",
        str(dirs["tmp"]),
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ]


def podman(args: list[str], workdir, *, timeout=TOOL_TIMEOUT) -> str:
    """Run ``podman ARGS`` in ``workdir``'s storage and return its stdout.

    Raises
    ------
    LoaderError
        When podman exits with a non-zero status (the message has stderr).
    """
    command = podman_command(workdir) + list(args)
    return _run(command, env=podman_env(workdir), timeout=timeout)


def parse_loaded(output: str) -> list[str]:
    """Return the names (or ``sha256:`` IDs) from ``podman load`` output.

    Examples
    --------
    >>> parse_loaded("Loaded image: localhost/a:1\\nLoaded image(s): b:2, c:3\\n")
    ['localhost/a:1', 'b:2', 'c:3']
    """
    names = []
    for line in output.splitlines():
        if line.startswith(LOADED_PREFIX):
            listed = line.split(":", 1)[1]
            names += [name.strip() for name in listed.split(",") if name.strip()]
    return names


def podman_load(archive_path, workdir) -> list[str]:
    """Load a ``docker save`` (or OCI) archive with ``podman load``.

    Returns
    -------
    list of str
        What podman reports as loaded: names such as
        ``127.0.0.1:5000/t/x:1`` (names without a domain get ``localhost/``),
        or ``sha256:<config digest>`` for an untagged image.

    Examples
    --------
    >>> podman_load(tmp_path / "image.tar", loader_dir)  # doctest: +SKIP
    ['127.0.0.1:5000/t/x:1']
    """
    output = podman(["load", "--quiet", "--input", str(archive_path)], workdir)
    return parse_loaded(output)


def stored_config(name_or_id: str, workdir) -> dict:
    """Return the image config podman stored, read with skopeo.

    ``podman image inspect`` 4.3 has no ``Variant``; the stored config has.
    """
    dirs = _podman_dirs(workdir)
    store = f"containers-storage:[vfs@{dirs['root']}+{dirs['run']}]{name_or_id}"
    command = [SKOPEO, "inspect", "--config", store]
    return json.loads(_run(command, env=podman_env(workdir)))


def podman_inspect(name_or_id: str, workdir) -> dict:
    """Return ``podman image inspect`` of one loaded image as a dict.

    Keys include ``Id`` (the config digest hex), ``RepoTags``,
    ``Architecture``, ``Os``, ``RootFS.Layers`` (the diff IDs) and
    ``History``; ``Variant`` is added from the stored config.

    Examples
    --------
    >>> podman_inspect("127.0.0.1:5000/t/x:1", loader_dir)["Architecture"]  # doctest: +SKIP
    'arm64'
    """
    output = podman(["image", "inspect", name_or_id], workdir)
    image = json.loads(output)[0]
    if "Variant" not in image:
        image["Variant"] = stored_config(image["Id"], workdir).get("variant", "")
    return image


def skopeo_inspect(
    archive_path, transport: str = "docker-archive", *, raw=False, config=False
) -> dict:
    """Inspect an archive with skopeo and return the parsed JSON.

    Parameters
    ----------
    archive_path : path-like
        A ``docker-archive`` or ``oci-archive`` file; append ``:name:tag`` to
        pick one image of a multi-image docker archive.
    transport : {"docker-archive", "oci-archive"}
    raw : bool
        Return the manifest skopeo synthesizes (``--raw``) instead of the summary.
    config : bool
        Return the image config (``--config``).
    """
    command = [SKOPEO, "inspect"]
    command += ["--raw"] if raw else []
    command += ["--config"] if config else []
    return json.loads(_run(command + [f"{transport}:{archive_path}"]))


def skopeo_copy_to_archive(
    src_ref: str,
    dest,
    *,
    tls_verify: bool = False,
    dest_transport: str = "docker-archive",
    creds: str | None = None,
    cert_dir=None,
    dest_name: str | None = None,
    extra_args=(),
) -> Path:
    """Copy ``docker://src_ref`` into an archive with ``skopeo copy``.

    ``creds`` is ``"user:password"``; ``cert_dir`` a folder holding the
    registry CA as ``ca.crt``; ``dest_name`` the name written into a
    ``docker-archive`` (without it podman loads the image untagged);
    ``extra_args`` e.g. ``["--override-arch", "arm64"]``. Returns ``dest``.
    """
    command = [SKOPEO, "--insecure-policy", "copy", "--quiet"]
    command += [f"--src-tls-verify={str(tls_verify).lower()}"]
    command += ["--src-creds", creds] if creds else []
    command += ["--src-cert-dir", str(cert_dir)] if cert_dir else []
    command += list(extra_args)
    target = f"{dest_transport}:{dest}" + (f":{dest_name}" if dest_name else "")
    command += [f"docker://{src_ref}", target]
    _run(command)
    return Path(dest)
