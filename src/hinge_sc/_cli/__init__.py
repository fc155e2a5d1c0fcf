"""Command line ``hinge-sc``: ``features``, ``train``, ``generate`` and ``demo``.

A typical run on an H&E-only slide::

    hinge-sc features train.h5ad train_features.h5ad      # or a Visium folder / SpatialData .zarr
    hinge-sc train train_features.h5ad model/ --vocabulary gene_info.csv
    hinge-sc generate model/ slide.svs generated.h5ad

Arguments and inputs are checked before any work is done; a user error prints one line to stderr and exits with
status 2. No command replaces an earlier output unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys

from . import _demo, _features, _generate, _train
from ._common import USAGE_ERROR, Formatter, UsageError, configure_logging
from ._demo import MARKERS, OUTPUTS, check_args, run_demo

__all__ = ["MARKERS", "OUTPUTS", "USAGE_ERROR", "UsageError", "check_args", "main", "run_demo"]


def _version() -> str:
    from hinge_sc import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hinge-sc", description=__doc__, formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="Also print DEBUG lines.")
    common.add_argument("--debug", action="store_true", help="Show the traceback of an error instead of one line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (_features, _train, _generate, _demo):
        command.add_parser(sub, Formatter, parents=[common])
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from hinge_sc._files import FileIntegrityError

    # PermissionError: an output the operating system refuses (the API's errors name the argument and path)
    return (UsageError, FileNotFoundError, FileExistsError, FileIntegrityError, KeyError, ValueError, PermissionError)


def _fail(command: str, err: BaseException) -> None:
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    message = " ".join(str(message).split())  # one line
    print(f"hinge-sc {command}: error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hinge-sc``."""
    args = _parser().parse_args(argv)
    try:
        args.check(args)
    except UsageError as err:
        _fail(args.command, err)
    configure_logging(getattr(args, "verbose", False))
    try:
        args.run(args)
    except _user_errors() as err:
        if getattr(args, "debug", False):
            raise
        _fail(args.command, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
