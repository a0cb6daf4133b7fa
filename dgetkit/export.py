"""Batch exports: many images, one ``docker save`` archive each, one table out.

For moving a list of images into an air-gapped site. The work runs in three
steps so that a layer shared by several images is downloaded once, and no two
threads ever write the same cache file:

1. resolve every row (manifest and config; a bad row only fails itself);
2. fetch the distinct layers of all rows into the shared cache, ``jobs`` at once;
3. write the archives with :func:`dgetkit.pull`, ``archives`` at once, each
   pinned to the manifest digest resolved in step 1 and served from the cache.

The results come back as a pandas DataFrame with one row per input row.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .archive import check_output, default_name, is_gzip_name
from .errors import DgetkitError, InvalidOption
from .platform import Platform
from .progress import Progress
from .pull import DEFAULT_JOBS, fetch_layer, layer_jobs, open_cache, pull, resolve
from .reference import Reference
from .registry import Options
from .registry import connection as connection_options

#: Archives written at once: writing is disk-bound, two keep the disk busy.
DEFAULT_ARCHIVES = 2
#: Columns of the results, in order.
RESULT_COLUMNS = (
    "reference",
    "platform",
    "digest",
    "path",
    "bytes",
    "seconds",
    "error",
)
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass
class _Row:
    """One image to export and, as the steps run, what became of it."""

    label: str
    reference: str
    platform: str | None
    name: str | None
    path: Path | None = None
    image: object = None
    result: object = None
    error: str | None = None
    seconds: float = 0.0

    def fail(self, err: BaseException) -> None:
        if self.error is None:
            self.error = _message(err)

    def record(self) -> dict:
        pulled = self.result.images[0] if self.result else None
        platform = str(self.image.platform) if self.image else self.platform
        return {
            "reference": self.reference,
            "platform": platform,
            "digest": pulled.digest if pulled else None,
            "path": str(self.path) if self.result else None,
            "bytes": self.result.bytes if self.result else None,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


def export_many(
    table,
    folder: str | os.PathLike,
    *,
    platform: str | Platform | None = None,
    jobs: int = DEFAULT_JOBS,
    archives: int = DEFAULT_ARCHIVES,
    progress=True,
    compressed_layers: bool = False,
    oci_layout: bool = False,
    overwrite: bool = False,
    cache=None,
    options: Options | None = None,
    **connection,
) -> pd.DataFrame:
    """Export each row of ``table`` to its own archive in ``folder``.

    Parameters
    ----------
    table : DataFrame, list of str or list of dict
        Column ``reference`` (required), optional ``platform`` (else the
        ``platform`` argument) and optional ``name`` (the archive's file name
        in ``folder``; default ``<repository>_<tag>.tar``, plus the platform
        when the row names one). A list of strings is a list of references.
    folder : str or path
        Where the archives go; created if missing.
    platform : str, optional
        Platform for rows that give none; default linux on this machine's CPU.
    jobs : int
        Layers downloaded at once, over the whole batch.
    archives : int
        Archives written at once.
    progress : bool or tqdm-like
        One bar for the bytes of every distinct layer of the batch.
    compressed_layers, oci_layout, overwrite : bool
        As for :func:`dgetkit.pull`.
    cache : path, Cache or False, optional
        The blob cache shared by every row; ``False`` uses a temporary one.
    options : Options, optional
        Connection options, or give them as keywords (``username=``, ...).

    Returns
    -------
    DataFrame
        One row per input row: ``reference``, ``platform``, ``digest`` (image
        manifest), ``path``, ``bytes``, ``seconds`` (resolving and writing
        this row; the shared download is in ``attrs["download_seconds"]``) and
        ``error`` (None, or why this row failed; the others went on).

    Examples
    --------
    >>> results = export_many(["alpine:3.20", "busybox:1.36"], "out")  # doctest: +SKIP
    >>> results[results.error.notna()]  # doctest: +SKIP
    """
    if jobs < 1 or archives < 1:
        raise InvalidOption("jobs and archives must be at least 1")
    options = connection_options(options, **connection)
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    rows = _rows(table, platform)
    _assign_paths(rows, folder, overwrite)
    settings = {
        "compressed_layers": compressed_layers,
        "oci_layout": oci_layout,
        "overwrite": overwrite,
        "options": options,
    }
    with open_cache(cache) as store:
        _run_each(rows, lambda row: _resolve(row, options), archives)
        started = time.monotonic()
        downloaded = _download(rows, store, progress, jobs, settings)
        download_seconds = round(time.monotonic() - started, 3)
        _run_each(rows, lambda row: _write(row, store, jobs, settings), archives)
    frame = _frame([row.record() for row in rows])
    frame.attrs.update(downloaded=downloaded, download_seconds=download_seconds)
    return frame


def _frame(records: list[dict]) -> pd.DataFrame:
    """The results, with None (not NaN) where a row has no value."""
    frame = pd.DataFrame(records, columns=list(RESULT_COLUMNS))
    for column in ("reference", "platform", "digest", "path", "error"):
        values = frame[column].astype(object)
        frame[column] = values.where(values.notna(), None)
    frame["bytes"] = frame["bytes"].astype("Int64")
    return frame


# -- the table in ------------------------------------------------------------------


def _rows(table, platform) -> list[_Row]:
    default = str(platform) if platform else None
    records = _records(table)
    rows = []
    for label, record in zip(_labels(table, len(records)), records):
        reference = _text(record.get("reference"))
        if reference is None:
            raise InvalidOption(
                f"{label} of the table has no 'reference'; give one image "
                "reference per row, e.g. 'alpine:3.20'"
            )
        rows.append(
            _Row(
                label,
                reference,
                _text(record.get("platform")) or default,
                _text(record.get("name")),
            )
        )
    return rows


def _labels(table, count: int) -> list[str]:
    """How messages name each row: by the frame's index (a file's line numbers)."""
    if isinstance(table, pd.DataFrame):
        word = table.index.name or "row"
        return [f"{word} {value}" for value in table.index]
    return [f"row {n}" for n in range(1, count + 1)]


def _records(table) -> list[dict]:
    if isinstance(table, pd.DataFrame):
        if "reference" not in table.columns:
            raise InvalidOption(
                "the table needs a 'reference' column; 'platform' and 'name' "
                f"are optional (it has: {', '.join(map(str, table.columns))})"
            )
        return table.to_dict("records")
    if isinstance(table, (str, Reference)):
        table = [table]
    records = []
    for item in table:
        if isinstance(item, dict):
            records.append(item)
        elif isinstance(item, (str, Reference)):
            records.append({"reference": str(item)})
        elif isinstance(item, (tuple, list)):
            records.append(dict(zip(("reference", "platform", "name"), item)))
        else:
            raise InvalidOption(f"cannot read a table row from {item!r}")
    return records


def _text(value) -> str | None:
    """A stripped string, or None for missing values (None, NaN, '')."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _assign_paths(rows: list[_Row], folder: Path, overwrite: bool) -> None:
    """Give every row its archive path; the second row wanting a path fails."""
    taken: dict[Path, int] = {}
    for row in rows:
        try:
            path = check_output(folder / _file_name(row), overwrite=overwrite)
        except DgetkitError as err:
            row.fail(err)
            continue
        if path in taken:
            row.fail(
                InvalidOption(
                    f"{row.label} would write {path.name}, as {taken[path]} "
                    "does; give it another 'name'"
                )
            )
            continue
        taken[path] = row.label
        row.path = path


def _file_name(row: _Row) -> str:
    if row.name:
        if "/" in row.name or row.name in (".", ".."):
            raise InvalidOption(f"the name {row.name!r} must be a plain file name")
        return row.name if row.name.endswith(_ARCHIVE_SUFFIXES) else f"{row.name}.tar"
    name = default_name(Reference.parse(row.reference))
    if row.platform:
        name = f"{name[: -len('.tar')]}_{_slug(row.platform)}.tar"
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


# -- the three steps ---------------------------------------------------------------


def _run_each(rows: list[_Row], step, workers: int) -> None:
    """Run ``step`` on every row still without an error, ``workers`` at once."""
    todo = [row for row in rows if row.error is None]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dgetkit") as pool:
        list(pool.map(lambda row: _timed(row, step), todo))


def _timed(row: _Row, step) -> None:
    started = time.monotonic()
    try:
        step(row)
    except Exception as err:  # noqa: BLE001 - one row must not stop the batch
        row.fail(err)
    finally:
        row.seconds += time.monotonic() - started


def _resolve(row: _Row, options: Options) -> None:
    row.image = resolve(row.reference, platform=row.platform, options=options)


def _download(rows, store, progress, jobs: int, settings: dict) -> int:
    """Fetch each distinct layer of the resolved rows once; return the bytes."""
    decompress = not (settings["compressed_layers"] or settings["oci_layout"])
    ready = [row for row in rows if row.error is None]
    unique = layer_jobs([row.image for row in ready], decompress)
    total = sum(job.descriptor.size for job in unique.values())
    bar = Progress(progress, total, f"export {len(ready)} images")
    failed: dict = {}
    lock = threading.Lock()

    def fetch(job) -> None:
        try:
            fetch_layer(job, store, bar)
        except Exception as err:  # noqa: BLE001 - failed rows are reported
            with lock:
                failed[job.descriptor.digest] = err

    try:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="dgetkit") as pool:
            list(pool.map(fetch, unique.values()))
    finally:
        bar.close()
    for row in ready:
        for descriptor in row.image.manifest.layers:
            if descriptor.digest in failed:
                row.fail(failed[descriptor.digest])
    return total


def _write(row: _Row, store, jobs: int, settings: dict) -> None:
    pinned = row.image.reference.with_digest(row.image.digest)
    row.result = pull(
        pinned,
        row.path,
        progress=False,
        jobs=jobs,
        cache=store,
        **settings,
    )


def _message(err: BaseException) -> str:
    if isinstance(err, DgetkitError):
        return str(err)
    return f"{type(err).__name__}: {err}"


# -- reference files ---------------------------------------------------------------


def read_reference_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read a list of images to export: one ``REF [PLATFORM] [NAME]`` per line.

    ``#`` starts a comment; blank lines are skipped. With two fields the
    second is the archive name when it ends in ``.tar``, ``.tar.gz`` or
    ``.tgz``, else a platform; a platform of ``-`` means the default one.

    Returns
    -------
    DataFrame
        Columns ``reference``, ``platform``, ``name`` (None where not given),
        ready for :func:`export_many`.

    Examples
    --------
    A file such as::

        # images for the offline site
        alpine:3.20
        nginx:1.27  linux/arm64  nginx-arm.tar
        busybox:1.36  busybox.tar

    >>> read_reference_file("images.txt")  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidOption(f"cannot read the reference file {path}: {err}") from err
    rows, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if fields:
            rows.append(_parse_line(fields, path, number))
            lines.append(number)
    index = pd.Index(lines, name="line")
    return pd.DataFrame(rows, columns=["reference", "platform", "name"], index=index)


def _parse_line(fields: list[str], path: Path, number: int) -> dict:
    if len(fields) > 3:
        raise InvalidOption(
            f"{path}, line {number}: expected 'REF [PLATFORM] [NAME]', got "
            f"{len(fields)} fields"
        )
    reference, platform, name = fields[0], None, None
    if len(fields) == 3:
        platform, name = fields[1], fields[2]
    elif len(fields) == 2 and _is_archive_name(fields[1]):
        name = fields[1]
    elif len(fields) == 2:
        platform = fields[1]
    if platform == "-":
        platform = None
    return {"reference": reference, "platform": platform, "name": name}


def _is_archive_name(text: str) -> bool:
    return text.endswith(".tar") or is_gzip_name(text)
