"""The ``dgetkit`` command line.

``dgetkit pull REF [REF ...] -o FILE`` writes a ``docker save`` archive.
Errors print one line and exit with status 1 (2 for bad usage, 130 when
interrupted); no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import DgetkitError

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--username", "-u", help="registry user name")
    group.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (or token) from standard input",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP and unverified TLS (loopback registries may use "
        "HTTP anyway)",
    )
    group.add_argument(
        "--ca-cert", metavar="FILE", help="CA certificates (PEM) to trust"
    )
    group.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL",
        help="a Docker Hub mirror, tried before Docker Hub (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dgetkit",
        description="Pull container images into docker-save archives, no daemon.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log retries and resumes"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    pull = commands.add_parser("pull", help="pull images into an archive")
    pull.add_argument("references", nargs="*", metavar="REF", help="image reference")
    pull.add_argument(
        "-o", "--output", metavar="PATH", help="archive (.tar or .tar.gz)"
    )
    pull.add_argument("--platform", metavar="OS/ARCH[/VARIANT]")
    pull.add_argument("--jobs", "-j", type=int, default=None, help="layers at once")
    pull.add_argument(
        "--compressed-layers",
        action="store_true",
        help="store layers as the registry sent them (faster, smaller)",
    )
    pull.add_argument(
        "--oci-layout",
        action="store_true",
        help="also write the OCI image layout inside the archive",
    )
    pull.add_argument("--force", "-f", action="store_true", help="replace PATH")
    pull.add_argument("--no-progress", action="store_true", help="no progress bars")
    pull.add_argument("--cache", metavar="DIR", help="blob cache folder")
    pull.add_argument(
        "--no-cache", action="store_true", help="use a temporary cache, then drop it"
    )
    pull.add_argument(
        "--from-file",
        metavar="FILE",
        help="export each line's 'REF [PLATFORM] [NAME]' to its own archive in "
        "the -o folder",
    )
    _connection_arguments(pull)

    for name, help_text, metavar in (
        ("platforms", "list the platforms of an image index", "REF"),
        ("layers", "list the layers of an image, with the step that made each", "REF"),
        ("history", "list every history step of an image", "REF"),
        ("tags", "list the tags of a repository", "REPOSITORY"),
    ):
        look = commands.add_parser(name, help=help_text)
        look.add_argument("reference", metavar=metavar)
        if name in ("layers", "history"):
            look.add_argument("--platform", metavar="OS/ARCH[/VARIANT]")
        _connection_arguments(look)

    cache = commands.add_parser("cache", help="show or prune the blob cache")
    cache.add_argument(
        "action", choices=["list", "prune", "path"], nargs="?", default="list"
    )
    cache.add_argument("--cache", metavar="DIR", help="blob cache folder")
    cache.add_argument(
        "--older-than", type=float, metavar="DAYS", help="prune only older files"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="dgetkit: %(message)s")
        logging.getLogger("urllib3").setLevel(logging.ERROR)  # we log each retry
    try:
        return _run(args, parser)
    except KeyboardInterrupt:
        print(
            "dgetkit: interrupted; partial downloads are kept in the cache, run "
            "the same command to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except DgetkitError as err:
        if args.debug:
            raise
        print(f"dgetkit: error: {err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError) else EXIT_ERROR
    except OSError as err:
        if args.debug:
            raise
        print(f"dgetkit: error: {err}", file=sys.stderr)
        return EXIT_ERROR


def _run(args, parser) -> int:
    if args.command == "pull":
        return _pull(args, parser)
    if args.command == "cache":
        return _cache_command(args)
    return _look(args)


def _look(args) -> int:
    """``platforms``, ``layers``, ``history``, ``tags``: a table on stdout."""
    from . import frames

    function = getattr(frames, args.command)
    kwargs = {"options": _options(args)}
    if getattr(args, "platform", None):
        kwargs["platform"] = args.platform
    table = function(args.reference, **kwargs)
    columns = _COLUMNS[args.command]
    print(table[[c for c in columns if c in table.columns]].to_string(index=False))
    return 0


_COLUMNS = {
    "platforms": ["platform", "attestation", "digest", "size"],
    "layers": ["layer", "digest", "compression", "size_human", "created_by"],
    "history": ["step", "created", "empty_layer", "created_by"],
    "tags": ["tag"],
}


def _options(args):
    from .registry import Options

    password = None
    if args.password_stdin:
        if not args.username:
            raise _usage("--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise _usage("--password-stdin found no password on standard input")
    if args.insecure:  # asked for: no warning on every request
        import warnings

        from urllib3.exceptions import InsecureRequestWarning

        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    return Options(
        username=args.username,
        password=password,
        insecure=args.insecure,
        ca_cert=args.ca_cert,
        mirrors=tuple(args.mirror),
    )


def _usage(message: str):
    from .errors import InvalidOption

    return InvalidOption(message)


def _pull(args, parser) -> int:
    from .pull import DEFAULT_JOBS, pull

    if args.from_file:
        if args.references:
            raise _usage("give image references or --from-file FILE, not both")
        return _pull_many(args)
    if not args.references:
        parser.error("give at least one image reference, or --from-file FILE")
    result = pull(
        args.references,
        args.output,
        platform=args.platform,
        progress=not args.no_progress,
        jobs=DEFAULT_JOBS if args.jobs is None else args.jobs,
        compressed_layers=args.compressed_layers,
        oci_layout=args.oci_layout,
        overwrite=args.force,
        cache=False if args.no_cache else args.cache,
        options=_options(args),
    )
    for image in result.images:
        print(f"{image.reference}  {image.platform}  {image.digest}")
    print(f"wrote {result.path} ({_size(result.bytes)}) in {result.seconds:.1f}s")
    return 0


def _pull_many(args) -> int:
    from .archive import is_gzip_name
    from .export import export_many, read_reference_file
    from .pull import DEFAULT_JOBS

    if args.output and is_gzip_name(args.output) or str(args.output).endswith(".tar"):
        raise _usage("with --from-file, -o names a folder for the archives")
    table = read_reference_file(args.from_file)
    results = export_many(
        table,
        args.output or ".",
        platform=args.platform,
        progress=not args.no_progress,
        jobs=DEFAULT_JOBS if args.jobs is None else args.jobs,
        compressed_layers=args.compressed_layers,
        oci_layout=args.oci_layout,
        overwrite=args.force,
        cache=False if args.no_cache else args.cache,
        options=_options(args),
    )
    failures = 0
    for row in results.to_dict("records"):
        if row["error"]:
            failures += 1
            print(f"FAILED {row['reference']}: {row['error']}", file=sys.stderr)
        else:
            print(
                f"{row['reference']}  {row['platform']}  {row['digest']}  {row['path']}"
            )
    print(f"{len(results) - failures} of {len(results)} exported")
    return EXIT_ERROR if failures else 0


def _cache_command(args) -> int:
    from .cache import Cache

    cache = Cache(args.cache)
    if args.action == "path":
        print(cache.root)
    elif args.action == "prune":
        if args.older_than is not None and args.older_than < 0:
            raise _usage("--older-than needs a number of days, 0 or more")
        older = args.older_than * 86400 if args.older_than is not None else None
        freed = cache.prune(older_than=older)
        print(f"freed {_size(freed)} from {cache.root}")
    else:
        entries = cache.entries()
        for row in entries:
            print(f"{row['kind']:8} {row['digest']}  {_size(row['size'])}")
        total = sum(r["size"] for r in entries)
        print(f"{len(entries)} files, {_size(total)} in {cache.root}")
    return 0


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"


if __name__ == "__main__":
    sys.exit(main())
