"""Command line: ``python -m tricklab.data fetch [mnist|fashion ...] [--root DIR]``.

The same arguments serve ``tricklab data fetch`` (see tricklab/cli.py).
"""

from __future__ import annotations

import argparse
import difflib

from .mnist import KINDS, download_root, fetch_mnist


def data_set(name: str) -> str:
    """An argparse type: a known data set name, else the error with the closest name."""
    if name not in KINDS:
        close = difflib.get_close_matches(name, list(KINDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise argparse.ArgumentTypeError(f"unknown data set {name!r}, choose from {', '.join(sorted(KINDS))}{hint}")
    return name


def fetch_description() -> str:
    """Where the files go, the default folder spelled out for this machine (on a line of its own,
    so that help never breaks the path at a hyphen: pass RawDescriptionHelpFormatter)."""
    folders = " and ".join(f"ROOT/{KINDS[k]}/" for k in sorted(KINDS))
    return ("Download MNIST / Fashion-MNIST, verify the published SHA-256 digests, write each file atomically.\n\n"
            f"The files go into {folders}. Default ROOT: $TRICKLAB_DATA if set,\n"
            "else the user cache $XDG_CACHE_HOME/tricklab (~/.cache/tricklab); on this machine now:\n\n"
            f"  {download_root()}\n")


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    """The data sets to fetch and the folder they go into."""
    # a type, not choices: Python 3.11 checks the empty default of nargs="*" against the choices
    parser.add_argument("kinds", nargs="*", type=data_set, metavar="KIND",
                        help=f"data sets to fetch, of {', '.join(sorted(KINDS))} (default: mnist)")
    parser.add_argument("--root", default=None, metavar="ROOT",
                        help="folder for the files (default: $TRICKLAB_DATA, else the user cache; see above)")


def fetch(kinds: list[str] | None, root: str | None) -> int:
    """Fetch each data set (default: mnist) and print the folder that holds it."""
    for kind in kinds or ["mnist"]:
        print(f"{kind}: {fetch_mnist(kind, root)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tricklab.data")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="fetch")
    add_fetch_arguments(sub.add_parser("fetch", help="download and verify the MNIST / Fashion-MNIST files",
                                       description=fetch_description(),
                                       formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    return fetch(args.kinds, args.root)


if __name__ == "__main__":
    raise SystemExit(main())
