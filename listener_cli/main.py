"""listenerctl: the operator's command line over the listener.v1 API (``listener_client``).

Argument parsing lives here; what each command does is in ``listener_cli.commands``. Global
options may come before or after the command (``listenerctl --json plugin list`` and
``listenerctl plugin list --json`` are the same), so scripts and people both get it right.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import grpc

from listener_cli import commands
from listener_client import EVENT_TYPE_NAMES, ListenerClientError
from listener_common.testing.__main__ import add_arguments as plugin_test_arguments

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

EPILOG = """\
exit codes:
  0  success
  1  any other failure (e.g. a test event the plugin failed, an internal server error)
  2  usage error (unknown command or option, missing argument)
  3  not found (NOT_FOUND)
  4  invalid argument (INVALID_ARGUMENT, OUT_OF_RANGE; bad JSON, unknown event type, no such file)
  5  failed precondition or conflict (FAILED_PRECONDITION, ALREADY_EXISTS, ABORTED)
  6  server unavailable (UNAVAILABLE, DEADLINE_EXCEEDED)
  7  authentication (UNAUTHENTICATED, PERMISSION_DENIED)
  141  the reader of the output went away (e.g. | head), quietly, as Unix tools do

environment:
  LISTENER_SERVER  default for --server (else 127.0.0.1:50051)
  LISTENER_TOKEN   default for --token
"""

EVENTS_HELP = "comma separated event types, e.g. TASK_FAIL,WORKFLOW_END; one of: " + ", ".join(
    EVENT_TYPE_NAMES
)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with 2 like argparse's, and every parser shows the exit codes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("epilog", EPILOG)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        """argparse's message, with the nearest command when a name was mistyped."""
        super().error(message + _did_you_mean(message))


def _did_you_mean(message: str) -> str:
    """For "invalid choice: 'instanse' (choose from 'plugin', 'instance', …)"."""
    if "invalid choice: " not in message or "(choose from " not in message:
        return ""
    given = message.split("invalid choice: ", 1)[1].split(" (choose from", 1)[0].strip("'")
    choices = [c.strip(" '") for c in message.rsplit("(choose from ", 1)[1].rstrip(")").split(",")]
    close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The connection and output options; ``suppress`` leaves unset ones out of the namespace,
    so a subcommand's copy does not overwrite a value given before the command."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--server",
        default=default(os.environ.get("LISTENER_SERVER") or "127.0.0.1:50051"),
        help="API server address host:port (env LISTENER_SERVER; default 127.0.0.1:50051)",
    )
    group.add_argument(
        "--token",
        default=default(os.environ.get("LISTENER_TOKEN") or None),
        help="bearer token sent as 'authorization: Bearer …' (env LISTENER_TOKEN)",
    )
    group.add_argument(
        "--tls", action="store_true", default=default(False), help="TLS with the system's CAs"
    )
    group.add_argument("--tls-ca", default=default(None), help="TLS: CA certificate (PEM)")
    group.add_argument(
        "--tls-cert", default=default(None), help="TLS: client certificate for mTLS (PEM)"
    )
    group.add_argument("--tls-key", default=default(None), help="TLS: client key for mTLS (PEM)")
    group.add_argument(
        "--tls-server-name",
        default=default(""),
        help="TLS: the name to expect in the server's certificate",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=default(30.0),
        help="deadline of each call in seconds (default 30)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON (errors too, on stderr) instead of tables",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="listenerctl",
        description="Operate listener plugins: install plugins, configure listener instances, "
        "publish events, and watch and steer their delivery.",
    )
    _global_options(parser, suppress=False)
    common = _Parser(add_help=False)
    _global_options(common, suppress=True)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def group(name: str, help_text: str) -> argparse._SubParsersAction[_Parser]:
        sub = groups.add_parser(name, help=help_text, description=help_text)
        return sub.add_subparsers(dest="command", metavar="ACTION", required=True)

    def command(
        subs: argparse._SubParsersAction[_Parser],
        name: str,
        help_text: str,
        handler: commands.Handler,
        aliases: Sequence[str] = (),
    ) -> argparse.ArgumentParser:
        p = subs.add_parser(
            name, help=help_text, description=help_text, parents=[common], aliases=list(aliases)
        )
        p.set_defaults(handler=handler)
        return p

    # -- plugin -----------------------------------------------------------------------
    plugin = group(
        "plugin", "plugin packages: new, test, build, install, update, uninstall, list, get"
    )
    p = command(plugin, "build", "build a plugin package (zip) from a folder", commands.build)
    p.add_argument("folder", help="plugin source folder with listener-plugin.toml")
    p.add_argument("--out", default="dist/plugins", help="output folder (default dist/plugins)")
    p = command(plugin, "new", "write a new plugin project (no server needed)", commands.new)
    p.add_argument("name", help="plugin name, also the default plugin id")
    p.add_argument("--dir", default=".", help="parent folder (default .)")
    p = command(
        plugin, "test", "run a plugin on sample events, as the alert server would", commands.test
    )
    plugin_test_arguments(p)

    def package_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--display-name", help="name shown in lists")
        p.add_argument("--isolation", choices=["namespace", "process"], help="plugin isolation")
        p.add_argument(
            "--stream",
            action="store_true",
            help="upload with UploadPluginPackage even when small (packages over 1 MiB always are)",
        )
        p.add_argument("--chunk-size", type=int, default=256 << 10, help=argparse.SUPPRESS)
        p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    p = command(plugin, "install", "install a plugin package (zip or folder)", commands.install)
    p.add_argument("package", help="a .zip package, or a plugin folder (built first)")
    p.add_argument("--id", default="", help="plugin id (default: the manifest's name)")
    package_options(p)
    p = command(
        plugin, "update", "hot-swap a plugin to a new package, or rename it", commands.update
    )
    p.add_argument("id", help="plugin id")
    p.add_argument("package", nargs="?", help="the new .zip package or plugin folder")
    p.add_argument("--etag", default="", help="only update this version of the plugin")
    package_options(p)
    p = command(
        plugin,
        "uninstall",
        "uninstall a plugin (fails while instances use it)",
        commands.uninstall,
        aliases=["delete"],
    )
    p.add_argument("id", help="plugin id")
    p.add_argument("--etag", default="", help="only delete this version of the plugin")
    command(plugin, "list", "list installed plugins", commands.list_plugins)
    p = command(plugin, "get", "show a plugin and its parameter form", commands.get_plugin)
    p.add_argument("id", help="plugin id")

    # -- instance ---------------------------------------------------------------------
    inst = group("instance", "listener instances: configure them and steer their delivery")

    def instance_options(p: argparse.ArgumentParser, *, required: bool = False) -> None:
        p.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a plugin parameter; repeat for several",
        )
        p.add_argument(
            "--events",
            required=required,
            help=EVENTS_HELP if not required else "required: " + EVENTS_HELP,
        )
        p.add_argument("--display-name", help="name shown in lists")
        p.add_argument(
            "--park-after",
            type=int,
            metavar="N",
            help="park a failing event after N attempts and go on (default: block and retry)",
        )
        p.add_argument(
            "--filter",
            metavar="CEL",
            help="only the events this CEL expression selects, e.g. "
            '\'event.task_fail.project_name == "etl"\'; "" removes it on update',
        )

    p = command(inst, "create", "create a listener instance", commands.create_instance)
    p.add_argument("id", help="instance id")
    p.add_argument("--plugin", required=True, help="plugin id")
    instance_options(p, required=True)
    p = command(
        inst, "update", "change an instance's params, events or policy", commands.update_instance
    )
    p.add_argument("id", help="instance id")
    instance_options(p)
    p.add_argument(
        "--replace-params",
        action="store_true",
        help="send exactly the --param values (default: merge them into the current ones)",
    )
    p.add_argument("--unset", action="append", default=[], metavar="KEY", help="drop a param")
    p.add_argument("--block", action="store_true", help="back to the blocking failure policy")
    p.add_argument("--etag", default="", help="only update this version of the instance")
    p = command(inst, "delete", "delete a listener instance", commands.delete_instance)
    p.add_argument("id", help="instance id")
    p.add_argument("--etag", default="", help="only delete this version of the instance")
    command(
        inst, "list", "list instances with state, pending count and lag", commands.list_instances
    )
    p = command(
        inst,
        "status",
        "show an instance: state, pending, lag, last error, next attempt, recent attempts",
        commands.status,
        aliases=["get"],
    )
    p.add_argument("id", help="instance id")
    for name, text in (
        ("retry", "retry the failed head event now instead of at its next backoff time"),
        ("skip", "park the failed head event and go on with the next one"),
        ("pause", "stop delivery (events keep queueing)"),
        ("resume", "resume delivery"),
    ):
        p = command(inst, name, text, commands.action(name))
        p.add_argument("id", help="instance id")
    p = command(inst, "replay", "deliver again from a sequence or a time on", commands.replay)
    p.add_argument("id", help="instance id")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-sequence", type=int, metavar="N", help="first sequence to redeliver")
    start.add_argument(
        "--from-time",
        metavar="TIME",
        help="redeliver events published at or after TIME (ISO 8601, e.g. 2024-05-01T12:00:00Z)",
    )
    p = command(
        inst, "test", "send a sample event straight to the plugin (not stored)", commands.test_event
    )
    p.add_argument("id", help="instance id")
    p.add_argument("--event", default="TASK_FAIL", help="event type (default TASK_FAIL)")

    # -- parked -----------------------------------------------------------------------
    parked = group("parked", "dead-letter lists of instances")
    p = command(parked, "list", "list an instance's parked events", commands.list_parked)
    p.add_argument("id", help="instance id")
    p = command(parked, "redeliver", "deliver parked events again", commands.redeliver)
    p.add_argument("id", help="instance id")
    p.add_argument("sequences", nargs="*", type=int, help="sequences (default: all parked events)")

    # -- event ------------------------------------------------------------------------
    event = group("event", "publish and list events")
    p = command(
        event,
        "publish",
        'publish events from JSON: one event ({"task_fail": {...}}), {"event": {...}}, '
        'a list, or {"events": [...]} (a list is one all-or-nothing batch)',
        commands.publish,
    )
    p.add_argument("file", help="JSON file, or - for standard input")
    p.add_argument("--request-id", help="idempotency key (default: a fresh one per call)")
    p = command(event, "list", "list stored events in sequence order", commands.list_events)
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events after SEQ")
    p.add_argument("--events", help=EVENTS_HELP)
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")

    # -- tail, health -----------------------------------------------------------------
    p = groups.add_parser(
        "tail",
        parents=[common],
        help="print deliveries (or, without an instance, published events) as they happen",
        description="Polls and prints each new line until Ctrl-C or --count lines. With an "
        "instance: its deliveries and failed attempts; without: new events in the log.",
    )
    p.set_defaults(handler=commands.tail)
    p.add_argument("id", nargs="?", help="instance id (default: tail the event log)")
    p.add_argument("--count", type=int, help="stop after this many lines")
    p.add_argument("--interval", type=float, default=0.5, help="poll interval, s (default 0.5)")
    p.add_argument(
        "--from-sequence", type=int, metavar="N", help="start after sequence N (default: now)"
    )
    p = groups.add_parser(
        "health",
        parents=[common],
        help="check a server with grpc.health.v1 (exit 0 when SERVING, 6 otherwise)",
        description="Checks a server (API or alert) with the gRPC health service: the probe "
        "the compose file's healthchecks use.",
    )
    p.set_defaults(handler=commands.health)
    p.add_argument("--service", default="", help="a service name (default: the whole server)")
    return parser


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
