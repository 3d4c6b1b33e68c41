"""``python -m chaos [--quick] [--backend postgresql|sqlite|all] [--duration S]``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from chaos.run import run_backend


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "all"], default="all")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of chaos each")
    parser.add_argument("--quick", action="store_true", help="about 30 s of chaos each")
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    args = parser.parse_args()
    duration = 30.0 if args.quick else args.duration
    backends = ["postgresql", "sqlite"] if args.backend == "all" else [args.backend]
    ok = True
    for backend in backends:
        outcome = asyncio.run(run_backend(backend, duration, args.lease_ttl))
        print(outcome.text(), flush=True)
        ok = ok and outcome.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
