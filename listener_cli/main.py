"""listenerctl: the operator's command line over the listener.v1 API (``listener_client``).

Running a command and its exit code live here; the command line in ``parser``, what each
command does in ``commands`` (plugins), ``instance_commands`` and ``event_commands``. Global
options may come before or after the command (``listenerctl --json plugin list`` and
``listenerctl plugin list --json`` are the same), so scripts and people both get it right.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence

import grpc

from listener_cli import commands
from listener_cli.parser import build_parser
from listener_client import ListenerClientError

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INVALID = 4
EXIT_CONFLICT = 5
EXIT_UNAVAILABLE = 6
EXIT_AUTH = 7
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell shows for a Unix tool whose reader went away

CODE_EXITS = {
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_INVALID,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_CONFLICT,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_CONFLICT,
    grpc.StatusCode.ABORTED: EXIT_CONFLICT,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_AUTH,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_AUTH,
}


def _report(exc: ListenerClientError, as_json: bool) -> None:
    if as_json:
        error = {
            "code": exc.code.name,
            "message": exc.message,
            "reason": exc.reason,
            "field_violations": [{"field": f, "description": d} for f, d in exc.field_violations],
        }
        sys.stderr.write(json.dumps({"error": error}) + "\n")
    else:
        sys.stderr.write(f"listenerctl: {exc}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = asyncio.run(commands.run(args))
        sys.stdout.flush()  # here, so a reader gone away is seen below and not at exit
        return code
    except BrokenPipeError:
        # The reader (| head, | grep -q) has what it wanted. Later writes, and the flush at
        # exit, go nowhere instead of printing a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except ListenerClientError as exc:
        _report(exc, args.json)
        return CODE_EXITS.get(exc.code, EXIT_OTHER)
    except commands.CommandError as exc:
        sys.stderr.write(f"listenerctl: {exc}\n")
        return exc.exit_code
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"listenerctl: {exc}\n")
        return EXIT_INVALID
    except KeyboardInterrupt:
        return EXIT_OK if args.group == "tail" else 130
