"""Random and mutated input thrown at the API server through gRPC.

For every case: the reply is OK or a proper google.rpc.Status with an ErrorInfo reason, never
UNKNOWN or INTERNAL; a refused call changes nothing in the store; the store's invariants hold
(every instance has its delivery row and its plugin, every plugin its package); and both
servers still answer their health checks. Bounded: each target runs a fixed number of examples
with no deadline, so the whole file stays well under a minute.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_server import validation
from listener.v1 import event_pb2, event_service_pb2, listener_instance_pb2, plugin_pb2
from tests.security.helpers import check_consistent, counts, details, secret_package, zip_of
from tests.support.databases import sqlite_url
from tests.support.samples import logger_package, sample_event
from tests.support.servers import Pair, running_pair

li_pb2 = listener_instance_pb2
es_pb2 = event_service_pb2

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def fuzz(examples: int) -> settings:
    """Bounded runs: a fixed number of examples, no per-example deadline (a case may load a
    plugin), no example database left in the working tree. Derandomized: every run draws
    the same examples, so "both sides explored" cannot fail by the luck of one draw (150
    random instance requests once drew no valid one)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- running the servers across examples -----------------------------------------------------


@contextmanager
def servers(tmp_path: Path) -> Iterator[tuple[asyncio.Runner, Pair]]:
    """One pair for all examples of a target, on a loop the synchronous test drives."""
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        pair = runner.run(
            stack.enter_async_context(
                running_pair(sqlite_url(tmp_path), tmp_path, max_package_bytes=512 * 1024, **SMALL)
            )
        )
        try:
            runner.run(_install_basics(pair, tmp_path))
            yield runner, pair
        finally:
            runner.run(stack.aclose())


SMALL = {"max_package_uncompressed_bytes": 2 * 2**20, "max_package_files": 64}


async def _install_basics(pair: Pair, tmp_path: Path) -> None:
    for package in (logger_package(), secret_package()):
        await pair.clients.plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=package))
    await pair.clients.instances.CreateListenerInstance(
        li_pb2.CreateListenerInstanceRequest(
            listener_instance_id="one",
            listener_instance=li_pb2.ListenerInstance(
                plugin="plugins/logger",
                params={"logFile": str(tmp_path / "one.jsonl")},
                event_types=[event_pb2.EventType.ValueType(n) for n in range(1, 14)],
            ),
        )
    )


async def _healthy(pair: Pair) -> None:
    for addr in (pair.api_addr, pair.alert_addr):
        async with grpc.aio.insecure_channel(addr) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, addr


async def outcome(call: Awaitable[Any]) -> tuple[grpc.StatusCode, Any]:
    """The call's status code, checking an error is a proper rich status."""
    try:
        return grpc.StatusCode.OK, await call
    except grpc.aio.AioRpcError as err:
        assert err.code() in ALLOWED, (err.code(), err.details())
        if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or "larger than max" not in (
            err.details() or ""
        ):
            assert details(err).reason, (err.code(), err.details())
        return err.code(), None


async def case(
    pair: Pair,
    body: Callable[[], Awaitable[tuple[grpc.StatusCode, Any]]],
    expect_change: Callable[[dict[str, int], dict[str, int], grpc.StatusCode, Any], None],
    seen: Counter[grpc.StatusCode],
) -> None:
    before = await counts(pair)
    code, reply = await body()
    seen[code] += 1
    after = await counts(pair)
    expect_change(before, after, code, reply)
    await check_consistent(pair)
    await _healthy(pair)


def assert_explored(seen: Counter[grpc.StatusCode], target: str) -> None:
    """The fuzzer reached both sides: some calls were accepted, some refused."""
    assert seen[grpc.StatusCode.OK] > 0, (target, seen)
    assert seen[grpc.StatusCode.INVALID_ARGUMENT] > 0, (target, seen)


def unchanged_unless_ok(
    before: dict[str, int], after: dict[str, int], code: grpc.StatusCode, reply: Any
) -> None:
    if code != grpc.StatusCode.OK:
        assert after == before, (code, before, after)


# -- strategies ----------------------------------------------------------------------------

SPECIAL_TEXT = [
    "",
    "../../etc/passwd",
    "/abs/path",
    "C:\\win",
    "\x00",
    "a\nb",
    "é" * 300,
    "\U0001d54f" * 70,
    "'; DROP TABLE listener_instances; --",
    "${jndi:ldap://x}",
    "plugins/logger",
    "listenerInstances/one",
    "******",
]
texts = st.one_of(
    st.text(max_size=40), st.sampled_from(SPECIAL_TEXT), st.text(min_size=250, max_size=400)
)

TRICKY_NAMES = [
    "../evil.py",
    "a/../../b.py",
    "/abs.py",
    "C:/x.py",
    "listener_core/__init__.py",
    "api_server.py",
    "listener/v1/x.py",
    "pkg/__init__.py",
    "listener-plugin.toml",
    "dir/",
    "x" * 300,
]
entry_names = st.one_of(
    st.sampled_from(TRICKY_NAMES),
    st.text(alphabet="abcdefgh_./-\\", min_size=1, max_size=30),
)

PLUGIN_MODULE = (
    "from listener_common import ListenerPlugin\n\nclass Plugin(ListenerPlugin):\n    pass\n"
)
MANIFEST_KEYS = ["name", "version", "entry", "sdk", "isolation", "display_name", "description"]
toml_values = st.one_of(
    st.sampled_from(
        ['"fz"', '"1.0.0"', '"mod:Plugin"', '">=1,<2"', '"namespace"', '">=99"', '"nope"']
    ),
    st.integers(-5, 10**6).map(str),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(alphabet="abc:.-_ >=<,", max_size=20).map(lambda t: f'"{t}"'),
    st.just("[1, 2]"),
)


@st.composite
def manifests(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from([*MANIFEST_KEYS, "extra", "name"]), max_size=9))
        return "\n".join(f"{key} = {draw(toml_values)}" for key in keys)
    return draw(st.one_of(st.text(max_size=200), st.sampled_from(["[", 'name = "x', "\x00"])))


@st.composite
def structured_zips(draw: st.DrawFn) -> bytes:
    entries: list[tuple[zipfile.ZipInfo | str, bytes | str]] = []
    if draw(st.booleans()):
        entries.append(("listener-plugin.toml", draw(manifests())))
    if draw(st.booleans()):
        entries.append(("mod.py", PLUGIN_MODULE))
    for name in draw(st.lists(entry_names, max_size=4)):
        info = zipfile.ZipInfo(name)
        if draw(st.integers(0, 9)) == 0:
            info.external_attr = 0o120777 << 16  # a symbolic link
        entries.append((info, draw(st.binary(max_size=64))))
    if draw(st.integers(0, 9)) == 0:
        entries.append(("bomb.txt", b"\0" * (3 * 2**20)))
    try:
        return zip_of(entries)
    except (ValueError, OSError):
        return b"PK\x05\x06" + bytes(18)


def valid_zip(name: str) -> bytes:
    manifest = f'name = "{name}"\nversion = "1.0.0"\nentry = "mod:Plugin"\nsdk = ">=1,<2"\n'
    return zip_of([("listener-plugin.toml", manifest), ("mod.py", PLUGIN_MODULE)])


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 3))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == 0 and raw:
            raw[at] = draw(st.integers(0, 255))
        elif kind == 1:
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == 2:
            del raw[at : at + draw(st.integers(1, 16))]
        else:
            raw = raw[: at + 1]
    return bytes(raw)


packages = st.one_of(
    st.binary(max_size=512),
    structured_zips(),
    st.integers(0, 10**6).flatmap(lambda n: mutated(valid_zip(f"fz{n}"))),
    st.integers(0, 10**6).map(lambda n: valid_zip(f"ok{n}")),
)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(fd: Any) -> st.SearchStrategy[Any]:
    if fd.type == fd.TYPE_STRING:
        return texts
    if fd.type == fd.TYPE_BYTES:
        return st.binary(max_size=64)
    if fd.type == fd.TYPE_BOOL:
        return st.booleans()
    if fd.type == fd.TYPE_ENUM:
        return st.integers(-3, 20)
    if fd.type in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32 if fd.type == fd.TYPE_FLOAT else 64)
    low, high = _INT_RANGES[fd.type]
    return st.one_of(st.integers(low, high), st.integers(-3, 1000).filter(lambda v: low <= v))


def _fill(draw: st.DrawFn, message: Message, depth: int) -> None:
    desc = message.DESCRIPTOR
    if desc.full_name == "google.protobuf.Timestamp":
        message.seconds = draw(  # type: ignore[attr-defined]
            st.one_of(st.integers(-62_135_596_800, 253_402_300_799), st.integers(-(2**62), 2**62))
        )
        message.nanos = draw(  # type: ignore[attr-defined]
            st.one_of(st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1))
        )
        return
    chosen = {o.full_name: draw(st.sampled_from([None, *o.fields])) for o in desc.oneofs}
    for fd in desc.fields:
        if fd.containing_oneof is not None:
            if chosen[fd.containing_oneof.full_name] is not fd:
                continue
        elif not draw(st.booleans()):
            continue
        if fd.type == fd.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            key, value = (
                fd.message_type.fields_by_name["key"],
                fd.message_type.fields_by_name["value"],
            )
            if value.type != fd.TYPE_MESSAGE:
                entries = draw(st.dictionaries(_scalar(key), _scalar(value), max_size=3))
                getattr(message, fd.name).update(entries)
        elif fd.type == fd.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if fd.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    _fill(draw, getattr(message, fd.name).add(), depth + 1)
            else:
                getattr(message, fd.name).SetInParent()
                _fill(draw, getattr(message, fd.name), depth + 1)
        elif fd.is_repeated:
            getattr(message, fd.name).extend(draw(st.lists(_scalar(fd), max_size=3)))
        else:
            setattr(message, fd.name, draw(_scalar(fd)))


@st.composite
def random_messages(draw: st.DrawFn, desc: Descriptor) -> Message:
    message = message_factory.GetMessageClass(desc)()
    _fill(draw, message, 0)
    return message


payload_fields = [
    f.name for f in event_pb2.ListenerEvent.DESCRIPTOR.oneofs_by_name["payload"].fields
]
events = st.one_of(
    random_messages(event_pb2.ListenerEvent.DESCRIPTOR),
    st.sampled_from(payload_fields).map(sample_event),
)


# -- targets -------------------------------------------------------------------------------


def test_fuzz_packages(tmp_path: Path) -> None:
    """Random bytes, structured hostile zips with random manifests, mutated valid packages."""
    seen: Counter[grpc.StatusCode] = Counter()
    with servers(tmp_path) as (runner, pair):
        plugins = pair.clients.plugins

        @fuzz(120)
        @given(package=packages, plugin_id=st.one_of(st.just(""), texts), upload=st.booleans())
        def run(package: bytes, plugin_id: str, upload: bool) -> None:
            async def body() -> tuple[grpc.StatusCode, Any]:
                if upload:

                    async def chunks() -> Any:
                        yield plugin_pb2.UploadPluginPackageRequest(chunk=package)

                    code, reply = await outcome(plugins.UploadPluginPackage(chunks()))
                    if code != grpc.StatusCode.OK:
                        return code, reply
                    request = plugin_pb2.CreatePluginRequest(
                        plugin_id=plugin_id, package_sha256=reply.sha256
                    )
                else:
                    request = plugin_pb2.CreatePluginRequest(plugin_id=plugin_id, package=package)
                return await outcome(plugins.CreatePlugin(request))

            def expect(before: Any, after: Any, code: grpc.StatusCode, reply: Any) -> None:
                if code == grpc.StatusCode.OK and not upload:
                    assert after["plugins"] == before["plugins"] + 1
                elif code != grpc.StatusCode.OK and not upload:
                    assert after == before

            runner.run(case(pair, body, expect, seen))

        run()
        assert_explored(seen, "packages")


def test_fuzz_instances(tmp_path: Path) -> None:
    """Create, update and delete listener instances with random ids, params, types, masks."""
    out_dir = tmp_path / "out"
    seen: Counter[grpc.StatusCode] = Counter()
    with servers(tmp_path) as (runner, pair):
        instances = pair.clients.instances
        ids = st.one_of(st.sampled_from(["", "one", "two", "fz-1"]), texts)
        plugins_ = st.one_of(
            st.sampled_from(["plugins/logger", "plugins/secretive", "plugins/none"]), texts
        )
        # logFile only ever points into the test's folder: a created instance writes there.
        safe_files = st.text(alphabet="abcdef", min_size=1, max_size=8).map(
            lambda n: str(out_dir / f"{n}.jsonl")
        )
        params = st.dictionaries(
            st.one_of(st.sampled_from(["apiKey", "logFile", "rotate", "maxBytes"]), texts),
            texts,
            max_size=4,
        ).flatmap(lambda p: st.one_of(st.just(p), safe_files.map(lambda f: {**p, "logFile": f})))
        resources = st.builds(
            li_pb2.ListenerInstance,
            name=st.one_of(
                st.sampled_from(["listenerInstances/one", "listenerInstances/two"]), texts
            ),
            display_name=texts,
            plugin=plugins_,
            params=params,
            event_types=st.lists(st.integers(-3, 20), max_size=5),
            etag=st.one_of(st.just(""), st.integers(0, 5).map(str), texts),
            failure_policy=st.builds(
                li_pb2.FailurePolicy,
                mode=st.integers(-1, 4),
                park_after=st.integers(-5, 2000),
            ),
        )
        masks = st.lists(
            st.one_of(
                st.sampled_from(["display_name", "params", "event_types", "failure_policy"]),
                texts,
            ),
            max_size=4,
        )

        @fuzz(150)
        @given(
            op=st.sampled_from(["create", "update", "delete"]),
            instance_id=ids,
            resource=resources,
            mask=masks,
        )
        def run(op: str, instance_id: str, resource: Any, mask: list[str]) -> None:
            async def body() -> tuple[grpc.StatusCode, Any]:
                if op == "create":
                    return await outcome(
                        instances.CreateListenerInstance(
                            li_pb2.CreateListenerInstanceRequest(
                                listener_instance_id=instance_id, listener_instance=resource
                            )
                        )
                    )
                if op == "update":
                    return await outcome(
                        instances.UpdateListenerInstance(
                            li_pb2.UpdateListenerInstanceRequest(
                                listener_instance=resource,
                                update_mask=field_mask_pb2.FieldMask(paths=mask),
                            )
                        )
                    )
                return await outcome(
                    instances.DeleteListenerInstance(
                        li_pb2.DeleteListenerInstanceRequest(name=resource.name, etag=resource.etag)
                    )
                )

            def expect(before: Any, after: Any, code: grpc.StatusCode, reply: Any) -> None:
                unchanged_unless_ok(before, after, code, reply)
                if code == grpc.StatusCode.OK:
                    for value in reply.params.values() if op != "delete" else ():
                        assert not value.startswith("enc:"), "sealed values never leave"

            runner.run(case(pair, body, expect, seen))

        run()
        assert_explored(seen, "instances")


def test_fuzz_events(tmp_path: Path) -> None:
    """Random events (every field, any value) singly and in batches, mutated bytes, listings."""
    seen: Counter[grpc.StatusCode] = Counter()
    with servers(tmp_path) as (runner, pair):
        stub = pair.clients.events
        raw_publish = pair.clients.channel.unary_unary("/listener.v1.EventService/PublishEvent")
        valid = es_pb2.PublishEventRequest(event=sample_event("task_fail")).SerializeToString()

        @fuzz(150)
        @given(
            op=st.sampled_from(["one", "batch", "raw", "list"]),
            batch=st.lists(events, min_size=1, max_size=4),
            request_id=st.one_of(st.just(""), texts),
            raw=st.one_of(mutated(valid), st.binary(max_size=64)),
            listing=random_messages(es_pb2.ListEventsRequest.DESCRIPTOR),
        )
        def run(op: str, batch: list[Any], request_id: str, raw: bytes, listing: Any) -> None:
            sent = {"one": 1, "batch": len(batch), "raw": 1, "list": 0}[op]

            async def body() -> tuple[grpc.StatusCode, Any]:
                if op == "one":
                    return await outcome(
                        stub.PublishEvent(
                            es_pb2.PublishEventRequest(event=batch[0], request_id=request_id)
                        )
                    )
                if op == "batch":
                    return await outcome(
                        stub.PublishEvents(
                            es_pb2.PublishEventsRequest(events=batch, request_id=request_id)
                        )
                    )
                if op == "raw":
                    return await outcome(raw_publish(raw))
                return await outcome(stub.ListEvents(listing))

            def expect(before: Any, after: Any, code: grpc.StatusCode, reply: Any) -> None:
                grew = after["events"] - before["events"]
                if code != grpc.StatusCode.OK or op == "list":
                    assert grew == 0
                elif op == "raw" or request_id:
                    assert grew in (0, sent)  # a repeated request_id is answered, not stored
                else:
                    assert grew == sent

            runner.run(case(pair, body, expect, seen))

        run()
        assert_explored(seen, "events")

        async def delivered_or_reported() -> None:
            """The alert server took every event: delivered, or a failure it reports."""
            instance = await pair.clients.instances.GetListenerInstance(
                li_pb2.GetListenerInstanceRequest(name="listenerInstances/one")
            )
            assert instance.name == "listenerInstances/one"
            await _healthy(pair)

        runner.run(delivered_or_reported())


def test_the_zip_strategies_produce_what_they_claim() -> None:
    """A guard on the fuzzer itself: the mutations and zips are not all trivially rejected."""
    good = valid_zip("probe")
    assert zipfile.ZipFile(io.BytesIO(good)).namelist() == ["listener-plugin.toml", "mod.py"]

    @settings(max_examples=40, database=None, deadline=None)
    @given(structured_zips())
    def check(data: bytes) -> None:
        zipfile.ZipFile(io.BytesIO(data))  # structured zips are zips; hostile only inside

    check()


_REQUEST_TYPES = [
    method.input_type
    for file in (event_service_pb2, listener_instance_pb2, plugin_pb2)
    for service in file.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


def test_the_fast_check_agrees_with_the_walker() -> None:
    """The validator's fast pass (no paths) must accept exactly what the walk finds clean."""
    outcomes: Counter[bool] = Counter()

    @fuzz(400)
    @given(st.sampled_from(_REQUEST_TYPES).flatmap(random_messages))
    def agree(request: Message) -> None:
        walked: list[validation.Violation] = []
        validation._walk(request, "", False, walked)
        clean = validation._fast(request.DESCRIPTOR, False)(request)
        assert clean == (not walked), walked
        outcomes[clean] += 1

    agree()
    assert outcomes[True] > 20 and outcomes[False] > 20, outcomes  # both sides explored
