"""listenerctl's command line: the groups, commands and options, and the global options that
may come before or after the command."""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Sequence
from typing import NoReturn

from listener_cli import commands, event_commands, instance_commands
from listener_client import EVENT_TYPE_NAMES
from listener_common.testing.__main__ import add_arguments as plugin_test_arguments

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


class _Builder:
    """Adds command groups and commands; each command takes the global options too."""

    def __init__(self, groups: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
        self.groups = groups
        self.common = common

    def group(self, name: str, help_text: str) -> argparse._SubParsersAction[_Parser]:
        sub = self.groups.add_parser(name, help=help_text, description=help_text)
        return sub.add_subparsers(dest="command", metavar="ACTION", required=True)

    def command(
        self,
        subs: argparse._SubParsersAction[_Parser],
        name: str,
        help_text: str,
        handler: commands.Handler,
        aliases: Sequence[str] = (),
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        """A command of group ``subs`` (``self.groups`` for one at the top); its description
        is ``help_text`` unless given."""
        p = subs.add_parser(
            name,
            help=help_text,
            description=help_text if description is None else description,
            parents=[self.common],
            aliases=list(aliases),
        )
        p.set_defaults(handler=handler)
        return p


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
    b = _Builder(groups, common)
    _plugin_commands(b)
    _instance_commands(b)
    _parked_commands(b)
    _event_commands(b)
    _tail_and_health(b)
    return parser


def _package_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--display-name", help="name shown in lists")
    p.add_argument("--isolation", choices=["namespace", "process"], help="plugin isolation")
    p.add_argument(
        "--stream",
        action="store_true",
        help="upload with UploadPluginPackage even when small (packages over 1 MiB always are)",
    )
    p.add_argument("--chunk-size", type=int, default=256 << 10, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _instance_options(p: argparse.ArgumentParser, *, required: bool = False) -> None:
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


def _plugin_commands(b: _Builder) -> None:
    """plugin: new, test, build, install, update, uninstall, list, get."""
    plugin = b.group(
        "plugin", "plugin packages: new, test, build, install, update, uninstall, list, get"
    )
    p = b.command(plugin, "build", "build a plugin package (zip) from a folder", commands.build)
    p.add_argument("folder", help="plugin source folder with listener-plugin.toml")
    p.add_argument("--out", default="dist/plugins", help="output folder (default dist/plugins)")
    p = b.command(plugin, "new", "write a new plugin project (no server needed)", commands.new)
    p.add_argument("name", help="plugin name, also the default plugin id")
    p.add_argument("--dir", default=".", help="parent folder (default .)")
    p = b.command(
        plugin, "test", "run a plugin on sample events, as the alert server would", commands.test
    )
    plugin_test_arguments(p)

    p = b.command(plugin, "install", "install a plugin package (zip or folder)", commands.install)
    p.add_argument("package", help="a .zip package, or a plugin folder (built first)")
    p.add_argument("--id", default="", help="plugin id (default: the manifest's name)")
    _package_options(p)
    p = b.command(
        plugin, "update", "hot-swap a plugin to a new package, or rename it", commands.update
    )
    p.add_argument("id", help="plugin id")
    p.add_argument("package", nargs="?", help="the new .zip package or plugin folder")
    p.add_argument("--etag", default="", help="only update this version of the plugin")
    _package_options(p)
    p = b.command(
        plugin,
        "uninstall",
        "uninstall a plugin (fails while instances use it)",
        commands.uninstall,
        aliases=["delete"],
    )
    p.add_argument("id", help="plugin id")
    p.add_argument("--etag", default="", help="only delete this version of the plugin")
    b.command(plugin, "list", "list installed plugins", commands.list_plugins)
    p = b.command(plugin, "get", "show a plugin and its parameter form", commands.get_plugin)
    p.add_argument("id", help="plugin id")


def _instance_commands(b: _Builder) -> None:
    """instance: configure listener instances and steer their delivery."""
    inst = b.group("instance", "listener instances: configure them and steer their delivery")

    p = b.command(inst, "create", "create a listener instance", instance_commands.create_instance)
    p.add_argument("id", help="instance id")
    p.add_argument("--plugin", required=True, help="plugin id")
    _instance_options(p, required=True)
    p = b.command(
        inst,
        "update",
        "change an instance's params, events or policy",
        instance_commands.update_instance,
    )
    p.add_argument("id", help="instance id")
    _instance_options(p)
    p.add_argument(
        "--replace-params",
        action="store_true",
        help="send exactly the --param values (default: merge them into the current ones)",
    )
    p.add_argument("--unset", action="append", default=[], metavar="KEY", help="drop a param")
    p.add_argument("--block", action="store_true", help="back to the blocking failure policy")
    p.add_argument("--etag", default="", help="only update this version of the instance")
    p = b.command(inst, "delete", "delete a listener instance", instance_commands.delete_instance)
    p.add_argument("id", help="instance id")
    p.add_argument("--etag", default="", help="only delete this version of the instance")
    b.command(
        inst,
        "list",
        "list instances with state, pending count and lag",
        instance_commands.list_instances,
    )
    p = b.command(
        inst,
        "status",
        "show an instance: state, pending, lag, last error, next attempt, recent attempts",
        instance_commands.status,
        aliases=["get"],
    )
    p.add_argument("id", help="instance id")
    _steering_commands(b, inst)


def _steering_commands(b: _Builder, inst: argparse._SubParsersAction[_Parser]) -> None:
    """instance retry, skip, pause, resume, replay, test: steer an instance's delivery."""
    for name, text in (
        ("retry", "retry the failed head event now instead of at its next backoff time"),
        ("skip", "park the failed head event and go on with the next one"),
        ("pause", "stop delivery (events keep queueing)"),
        ("resume", "resume delivery"),
    ):
        p = b.command(inst, name, text, instance_commands.action(name))
        p.add_argument("id", help="instance id")
    p = b.command(
        inst, "replay", "deliver again from a sequence or a time on", instance_commands.replay
    )
    p.add_argument("id", help="instance id")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-sequence", type=int, metavar="N", help="first sequence to redeliver")
    start.add_argument(
        "--from-time",
        metavar="TIME",
        help="redeliver events published at or after TIME (ISO 8601, e.g. 2024-05-01T12:00:00Z)",
    )
    p = b.command(
        inst,
        "test",
        "send a sample event straight to the plugin (not stored)",
        instance_commands.test_event,
    )
    p.add_argument("id", help="instance id")
    p.add_argument("--event", default="TASK_FAIL", help="event type (default TASK_FAIL)")


def _parked_commands(b: _Builder) -> None:
    """parked: dead-letter lists."""
    parked = b.group("parked", "dead-letter lists of instances")
    p = b.command(parked, "list", "list an instance's parked events", instance_commands.list_parked)
    p.add_argument("id", help="instance id")
    p = b.command(parked, "redeliver", "deliver parked events again", instance_commands.redeliver)
    p.add_argument("id", help="instance id")
    p.add_argument("sequences", nargs="*", type=int, help="sequences (default: all parked events)")


def _event_commands(b: _Builder) -> None:
    """event: publish and list."""
    event = b.group("event", "publish and list events")
    p = b.command(
        event,
        "publish",
        'publish events from JSON: one event ({"task_fail": {...}}), {"event": {...}}, '
        'a list, or {"events": [...]} (a list is one all-or-nothing batch)',
        event_commands.publish,
    )
    p.add_argument("file", help="JSON file, or - for standard input")
    p.add_argument("--request-id", help="idempotency key (default: a fresh one per call)")
    p = b.command(event, "list", "list stored events in sequence order", event_commands.list_events)
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events after SEQ")
    p.add_argument("--events", help=EVENTS_HELP)
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")


def _tail_and_health(b: _Builder) -> None:
    """tail and health, commands of their own."""
    p = b.command(
        b.groups,
        "tail",
        "print deliveries (or, without an instance, published events) as they happen",
        event_commands.tail,
        description="Polls and prints each new line until Ctrl-C or --count lines. With an "
        "instance: its deliveries and failed attempts; without: new events in the log.",
    )
    p.add_argument("id", nargs="?", help="instance id (default: tail the event log)")
    p.add_argument("--count", type=int, help="stop after this many lines")
    p.add_argument("--interval", type=float, default=0.5, help="poll interval, s (default 0.5)")
    p.add_argument(
        "--from-sequence",
        type=int,
        metavar="N",
        help="start after sequence N (default: now); events stored before the instance "
        "was created never reached it and are not listed",
    )
    p = b.command(
        b.groups,
        "health",
        "check a server with grpc.health.v1 (exit 0 when SERVING, 6 otherwise)",
        event_commands.health,
        description="Checks a server (API or alert) with the gRPC health service: the probe "
        "the compose file's healthchecks use.",
    )
    p.add_argument("--service", default="", help="a service name (default: the whole server)")
