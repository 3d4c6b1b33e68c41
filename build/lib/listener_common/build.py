"""Builds plugin folders into package zips: ``python -m listener_common.build SRC... --out DIR``.

Each SRC is a plugin folder with ``listener-plugin.toml`` at its root; other folders (and plain
files, as a shell glob like ``plugins/*`` may list) are skipped with a note, so one command can
build a whole ``plugins/`` tree. Prints each built zip's path; on an invalid package, prints
the reason and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from listener_common.errors import PackageError
from listener_common.manifest import MANIFEST_NAME
from listener_common.package import build_package


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m listener_common.build",
        description="Build listener plugin folders into deterministic package zips.",
    )
    parser.add_argument("sources", nargs="+", type=Path, metavar="SRC_DIR")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    for src in args.sources:
        if not (src / MANIFEST_NAME).is_file():
            print(f"skipping {src}: no {MANIFEST_NAME}", file=sys.stderr)
            continue
        try:
            built = build_package(src, args.out)
        except PackageError as exc:
            print(f"error: {src}: {exc}", file=sys.stderr)
            return 1
        print(built)
    return 0


if __name__ == "__main__":
    sys.exit(main())
