"""gRPC and HTTP/JSON give the same answer to the same request.

A property test: hypothesis draws requests of most methods (valid and not: odd ids, page
sizes, enum numbers, unknown plugins, stale etags, random events), each is sent once over gRPC
and once over HTTP (its JSON spelled in lowerCamelCase or snake_case, enums by full or short
name or number), and the two answers must agree: the same status (the HTTP status being the
gRPC code's) with the same message and ErrorInfo reason, or the same response. Publishes
store two events, which must be equal but for their id, sequence and publish time.
Derandomized like the fuzz tests, so every run draws the same cases.
"""

from __future__ import annotations

import asyncio
import json
import string
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import grpc
import yarl
from google.protobuf import json_format, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_server.http import routes as routing
from api_server.http import transcode
from listener.v1 import event_pb2, event_service_pb2, listener_instance_pb2, plugin_pb2
from tests.security.helpers import details
from tests.support.databases import sqlite_url
from tests.support.samples import PAYLOAD_FIELDS, logger_package, sample_event
from tests.support.servers import Pair, running_pair

li_pb2 = listener_instance_pb2
ROUTES = {r.method.name: r for r in routing.routes()}
EXAMPLES = 100


@contextmanager
def servers(tmp_path: Path) -> Iterator[tuple[asyncio.Runner, Pair, aiohttp.ClientSession]]:
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        pair = runner.run(stack.enter_async_context(running_pair(sqlite_url(tmp_path), tmp_path)))
        session = runner.run(_session(stack))
        try:
            runner.run(_install(pair, tmp_path))
            yield runner, pair, session
        finally:
            runner.run(stack.aclose())


async def _session(stack: AsyncExitStack) -> aiohttp.ClientSession:
    """Opened on the runner's loop, which aiohttp binds it to."""
    return await stack.enter_async_context(aiohttp.ClientSession())


async def _install(pair: Pair, tmp_path: Path) -> None:
    await pair.clients.plugins.CreatePlugin(
        plugin_pb2.CreatePluginRequest(package=logger_package())
    )
    await pair.clients.instances.CreateListenerInstance(
        li_pb2.CreateListenerInstanceRequest(
            listener_instance_id="one",
            listener_instance=li_pb2.ListenerInstance(
                plugin="plugins/logger",
                params={"logFile": str(tmp_path / "one.jsonl")},
                event_types=[event_pb2.EVENT_TYPE_SERVER_DOWN],
            ),
        )
    )


# -- requests ---------------------------------------------------------------------------------

ids = st.one_of(
    st.sampled_from(["logger", "one", "nope", "Bad_Id", "a" * 70, "..", "x:y", "é", "a b"]),
    st.text(alphabet=string.ascii_lowercase + string.digits + "-_.:%", min_size=1, max_size=12),
    st.text(min_size=1, max_size=8).filter(lambda s: "/" not in s),
)
page_sizes = st.integers(-3, 1200)
tokens = st.one_of(st.just(""), st.text(max_size=12))
enum_numbers = st.integers(0, 15)
texts = st.text(max_size=20)


@st.composite
def events(draw: st.DrawFn) -> event_pb2.ListenerEvent:
    event = sample_event(draw(st.sampled_from(PAYLOAD_FIELDS)), draw(st.integers(1, 50)))
    if draw(st.booleans()):
        event.source = draw(texts)
    if draw(st.integers(0, 3)) == 0:
        event.type = draw(enum_numbers)  # may disagree with the payload
    if draw(st.integers(0, 5)) == 0:
        event.ClearField(event.WhichOneof("payload") or "server_down")
    return event


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, Message]:
    kind = draw(
        st.sampled_from(
            [
                "GetPlugin",
                "ListPlugins",
                "DeletePlugin",
                "UpdatePlugin",
                "GetListenerInstance",
                "ListListenerInstances",
                "CreateListenerInstance",
                "ListParkedEvents",
                "SendTestEvent",
                "ListEvents",
                "PublishEvent",
            ]
        )
    )
    if kind == "GetPlugin":
        return kind, plugin_pb2.GetPluginRequest(name="plugins/" + draw(ids))
    if kind == "ListPlugins":
        return kind, plugin_pb2.ListPluginsRequest(
            page_size=draw(page_sizes), page_token=draw(tokens)
        )
    if kind == "DeletePlugin":  # never succeeds: logger is in use, others do not exist
        return kind, plugin_pb2.DeletePluginRequest(name="plugins/" + draw(ids), etag=draw(texts))
    if kind == "UpdatePlugin":  # a stale etag, or an unknown plugin: never succeeds
        return kind, plugin_pb2.UpdatePluginRequest(
            plugin=plugin_pb2.Plugin(
                name="plugins/" + draw(ids),
                etag=draw(st.text(min_size=1, max_size=8)),
                display_name=draw(texts),
            ),
            update_mask={
                "paths": draw(st.lists(st.sampled_from(["display_name", "nope"]), max_size=2))
            },
        )
    if kind == "GetListenerInstance":
        return kind, li_pb2.GetListenerInstanceRequest(name="listenerInstances/" + draw(ids))
    if kind == "ListListenerInstances":
        return kind, li_pb2.ListListenerInstancesRequest(
            page_size=draw(page_sizes), page_token=draw(tokens)
        )
    if kind == "CreateListenerInstance":  # an unknown plugin: never creates
        return kind, li_pb2.CreateListenerInstanceRequest(
            listener_instance_id=draw(ids),
            listener_instance=li_pb2.ListenerInstance(
                plugin=draw(st.sampled_from(["plugins/nope", "nope", ""])),
                params=draw(st.dictionaries(texts, texts, max_size=3)),
                event_types=draw(st.lists(enum_numbers, max_size=3)),
            ),
        )
    if kind == "ListParkedEvents":
        return kind, li_pb2.ListParkedEventsRequest(
            parent="listenerInstances/" + draw(ids), page_size=draw(page_sizes)
        )
    if kind == "SendTestEvent":  # never to "one": its answer carries a duration
        name = draw(ids.filter(lambda s: s != "one"))
        return kind, li_pb2.SendTestEventRequest(
            name="listenerInstances/" + name, event_type=draw(enum_numbers)
        )
    if kind == "ListEvents":
        return kind, event_service_pb2.ListEventsRequest(
            page_size=draw(page_sizes),
            page_token=draw(tokens),
            after_sequence=draw(st.integers(-2, 10**12)),
            event_types=draw(st.lists(enum_numbers, max_size=3)),
        )
    return kind, event_service_pb2.PublishEventRequest(event=draw(events()))


# -- the two doors ----------------------------------------------------------------------------


def _segment(text: str) -> str:
    """``text`` percent-encoded whole, dots included, so no client normalizes the path."""
    return "".join(
        c if c in string.ascii_lowercase + string.digits + "-" else _escape(c) for c in text
    )


def _escape(char: str) -> str:
    return "".join(f"%{b:02X}" for b in char.encode())


def _spelled(message: Message, snake: bool, enums: str) -> Any:
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=snake, use_integers_for_enums=enums == "number"
    )
    if enums == "short":
        data = json.loads(json.dumps(data).replace('"EVENT_TYPE_', '"'))
    return data


def _http_request(kind: str, request: Message, snake: bool, enums: str) -> tuple[str, str, Any]:
    """The method, path (with query) and JSON body of ``request`` for its route."""
    route = ROUTES[kind]
    path = route.template.text
    bound: dict[str, str] = {}
    for variable in route.template.variables:
        value: Any = request
        for part in variable.field_path:
            value = getattr(value, part)
        collection, _, ident = str(value).partition("/")
        segment = "{" + ".".join(variable.field_path) + "=" + collection + "/*}"
        path = path.replace(segment, collection + "/" + _segment(ident))
        bound[".".join(variable.field_path)] = value
    data = _spelled(request, snake, enums)
    for field_path in bound:
        node = data
        parts = field_path.split(".")
        for part in parts[:-1]:
            node = node.get(part, {})
        node.pop(parts[-1], None)
    if route.body == "*":
        return route.http_method, path, data
    body = None
    if route.body:
        field = route.input.fields_by_name[route.body]
        body = data.pop(field.name if snake else field.json_name, {})
    query: list[tuple[str, str]] = []
    for key, value in data.items():
        for item in value if isinstance(value, list) else [value]:
            text = item if isinstance(item, str) else json.dumps(item)
            query.append((key, text))
    return route.http_method, path + ("?" + urlencode(query) if query else ""), body


async def _grpc(pair: Pair, kind: str, request: Message) -> tuple[int, Any, str]:
    method = ROUTES[kind].method
    response_cls = message_factory.GetMessageClass(method.output_type)
    call = pair.clients.channel.unary_unary(
        ROUTES[kind].grpc_method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    try:
        reply = await call(request, timeout=60)
    except grpc.aio.AioRpcError as err:
        return err.code().value[0], err.details(), details(err).reason
    return 0, transcode.to_json(reply), ""


async def _http(
    session: aiohttp.ClientSession, pair: Pair, kind: str, request: Message, snake: bool, enums: str
) -> tuple[int, int, Any, str]:
    method, path, body = _http_request(kind, request, snake, enums)
    url = f"http://127.0.0.1:{pair.api.http_port}{path}"
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    async with session.request(method, yarl_url(url), **kwargs) as response:
        data = json.loads(await response.read())
    if response.status == 200:
        return response.status, 0, data, ""
    reason = next(
        (d.get("reason", "") for d in data["details"] if d["@type"].endswith("ErrorInfo")), ""
    )
    return response.status, data["code"], data["message"], reason


def yarl_url(url: str) -> yarl.URL:
    """Sent exactly as built: no client-side normalizing of ``..`` or re-quoting."""
    return yarl.URL(url, encoded=True)


def _without(data: Any, *keys: str) -> Any:
    return {k: v for k, v in data.items() if k not in keys}


async def _same(
    pair: Pair, session: aiohttp.ClientSession, kind: str, request: Message, snake: bool, enums: str
) -> int:
    code, answer, reason = await _grpc(pair, kind, request)
    status, http_code, http_answer, http_reason = await _http(
        session, pair, kind, request, snake, enums
    )
    shown = (kind, request, snake, enums, answer, http_answer)
    assert http_code == code, shown
    assert status == transcode.http_status(code), shown
    assert http_reason == reason, shown
    if code:
        assert http_answer == answer, shown
    elif kind == "PublishEvent":
        stored = await pair.clients.events.ListEvents(
            event_service_pb2.ListEventsRequest(
                after_sequence=int(answer["sequence"]) - 1, page_size=2
            )
        )
        first, second = (transcode.to_json(e) for e in stored.events)
        assert second["sequence"] == http_answer["sequence"], shown
        volatile = ("id", "sequence", "publishTime")
        assert _without(first, *volatile) == _without(second, *volatile), shown
    elif kind == "GetListenerInstance":
        assert _without(answer, "delivery") == _without(http_answer, "delivery"), shown
    elif kind == "ListListenerInstances":
        strip = [_without(i, "delivery") for i in answer["listenerInstances"]]
        http_strip = [_without(i, "delivery") for i in http_answer["listenerInstances"]]
        assert strip == http_strip, shown
    else:
        assert http_answer == answer, shown
    return code


def test_grpc_and_http_give_the_same_answer(tmp_path: Path) -> None:
    seen: Counter[int] = Counter()
    with servers(tmp_path) as (runner, pair, session):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            requests(),
            st.booleans(),
            st.sampled_from(["full", "short", "number"]),
        )
        def check(drawn: tuple[str, Message], snake: bool, enums: str) -> None:
            kind, request = drawn
            seen[runner.run(_same(pair, session, kind, request, snake, enums))] += 1

        check()
    # Both sides explored: accepted calls, and refusals of several kinds.
    assert seen[0] > 0 and len(seen) >= 3, seen


# -- random JSON, random routes ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "event",
                        "taskFail",
                        "name",
                        "plugin",
                        "params",
                        "eventTypes",
                        "updateMask",
                        "pageSize",
                        "fromTime",
                        "value",
                        "package",
                    ]
                ),
                st.text(max_size=8),
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
RAW_BODIES = [b"[" * 5000, b"1" * 5000, b'{"a": ' * 3000, b"\xff", b"", b"null", b"1e99999"]


@st.composite
def http_calls(draw: st.DrawFn) -> tuple[str, str, bytes]:
    route = draw(st.sampled_from(list(ROUTES.values())))
    path, params = route.template.openapi_path()
    for param in params:
        path = path.replace("{" + param + "}", _segment(draw(ids)))
    if draw(st.booleans()):
        keys = draw(
            st.lists(st.sampled_from(["pageSize", "eventTypes", "a.b", "name", "etag"]), max_size=3)
        )
        path += "?" + urlencode([(k, draw(st.text(max_size=6))) for k in keys])
    body = draw(
        st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.sampled_from(RAW_BODIES))
    )
    return route.http_method, path, body


def test_random_json_on_every_route_is_never_a_server_error(tmp_path: Path) -> None:
    """Whatever the body or query, the answer is a google.rpc.Status 4xx (or a success),
    never a 5xx: the gateway's parsing refuses, it does not break."""
    statuses: Counter[int] = Counter()
    with servers(tmp_path) as (runner, pair, session):

        async def send(method: str, path: str, body: bytes) -> None:
            url = yarl_url(f"http://127.0.0.1:{pair.api.http_port}{path}")
            headers = {"Content-Type": "application/json"}
            async with session.request(method, url, data=body, headers=headers) as response:
                data = json.loads(await response.read())
                statuses[response.status] += 1
                assert response.status < 500, (method, path, body[:200], data)
                if response.status != 200:
                    assert data["code"] and data["message"], data

        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(http_calls())
        def check(call: tuple[str, str, bytes]) -> None:
            runner.run(send(*call))

        check()
    assert statuses[400] > 0 and len(statuses) >= 2, statuses
