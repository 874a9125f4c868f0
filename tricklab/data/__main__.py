"""Command line: ``python -m tricklab.data fetch [mnist|fashion ...] [--root DIR]``."""

from __future__ import annotations

import argparse

from .mnist import KINDS, fetch_mnist


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tricklab.data")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download and verify the MNIST / Fashion-MNIST files")
    fetch.add_argument("kinds", nargs="*", default=["mnist"], metavar="KIND",
                       help=f"data sets to fetch, of {sorted(KINDS)} (default: mnist)")
    fetch.add_argument("--root", default=None,
                       help="target root (default: $TRICKLAB_DATA, else the user cache)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; choose from {sorted(KINDS)}")
    for kind in args.kinds:
        print(f"{kind}: {fetch_mnist(kind, args.root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
