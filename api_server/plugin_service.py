"""listener.v1.PluginService: install, upgrade and uninstall plugin packages."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import empty_pb2, json_format
from sqlalchemy import exc as sa_exc

from api_server import conversions, names, paging, refusals, validation
from api_server.alert_fleet import AlertFleet
from event_store import catalog
from event_store.models import Plugin, utcnow
from event_store.store import Store
from listener.v1 import plugin_pb2, plugin_pb2_grpc
from listener_common import params as sdk_params
from listener_common.errors import ParamValidationError
from listener_common.package import PackageInfo, inspect_package
from listener_core import errors
from listener_core.server import Context
from listener_core.settings import PackageLimits

_UPDATABLE = {"display_name", "isolation"}


@dataclass(frozen=True)
class _NewPackage:
    """An update's new package: what the manifest says, and the params form it declares."""

    info: PackageInfo
    form: list[dict[str, Any]]

    def write_to(self, row: Plugin) -> None:
        manifest = self.info.manifest
        row.sha256, row.version = self.info.sha256, str(manifest.version)
        row.entry, row.sdk = manifest.entry, str(manifest.sdk)
        row.params_json = json.dumps(self.form)


class PluginService(plugin_pb2_grpc.PluginServiceServicer):
    def __init__(self, store: Store, fleet: AlertFleet, limits: PackageLimits) -> None:
        self.store = store
        self.fleet = fleet
        self.max_package = limits.max_bytes
        # Zip-bomb limits: checked from the zip's directory before anything is unpacked.
        self.limits = {
            "max_files": limits.max_files,
            "max_uncompressed": limits.max_uncompressed_bytes,
        }

    async def _package(self, request: Any) -> tuple[PackageInfo, bytes]:
        source = request.WhichOneof("package_source")
        if source == "package":
            data = bytes(request.package)
        elif source == "package_sha256":
            async with self.store.reader() as session:
                data = (await catalog.get_package(session, request.package_sha256)).data
        else:
            raise errors.InvalidArgument(
                "a package is required: set package (zip bytes) or package_sha256",
                field_violations=[("package", "required")],
            )
        if len(data) > self.max_package:
            raise errors.InvalidArgument(
                f"package is {len(data)} bytes; the limit is {self.max_package}",
                reason="PACKAGE_TOO_LARGE",
                field_violations=[("package", "too large")],
            )
        return inspect_package(data, **self.limits), data

    async def _probe_form(
        self, plugin_id: str, info: PackageInfo, data: bytes, isolation: str
    ) -> list[dict[str, Any]]:
        described = await self.fleet.probe(plugin_id, info.sha256, data, isolation)
        return [json_format.MessageToDict(s) for s in described.params]

    @staticmethod
    def _isolation(requested: int, default: str) -> str:
        if requested == plugin_pb2.Isolation.ISOLATION_UNSPECIFIED:
            return default
        if requested not in conversions.ISOLATION_NAMES:
            raise errors.InvalidArgument(
                f"unknown isolation {requested}", field_violations=[("plugin.isolation", "unknown")]
            )
        return conversions.ISOLATION_NAMES[requested]  # type: ignore[index]

    async def CreatePlugin(
        self, request: plugin_pb2.CreatePluginRequest, context: Context
    ) -> plugin_pb2.Plugin:
        info, data = await self._package(request)
        manifest = info.manifest
        plugin_id = names.check_id(request.plugin_id or manifest.name, "plugin_id")
        async with self.store.reader() as session:
            if await session.get(Plugin, plugin_id) is not None:
                raise errors.AlreadyExists(f"plugin {names.plugin_name(plugin_id)} already exists")
        isolation = self._isolation(request.plugin.isolation, manifest.isolation)
        form = await self._probe_form(plugin_id, info, data, isolation)
        now = utcnow()
        row = Plugin(
            id=plugin_id,
            display_name=request.plugin.display_name or manifest.display_name or manifest.name,
            version=str(manifest.version),
            entry=manifest.entry,
            sdk=str(manifest.sdk),
            isolation=isolation,
            sha256=info.sha256,
            params_json=json.dumps(form),
            state="ACTIVE",
            revision=1,
            create_time=now,
            update_time=now,
        )
        try:
            async with self.store.transaction() as session:
                await catalog.put_package(session, info.sha256, data)
                session.add(row)
        except sa_exc.IntegrityError:
            raise errors.AlreadyExists(
                f"plugin {names.plugin_name(plugin_id)} already exists"
            ) from None
        await self.fleet.activate_plugin(plugin_id, info.sha256, isolation)
        return conversions.plugin_message(row, len(data))

    async def UploadPluginPackage(
        self,
        request_iterator: AsyncIterator[plugin_pb2.UploadPluginPackageRequest],
        context: Context,
    ) -> plugin_pb2.UploadPluginPackageResponse:
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        size = 0
        expected = ""
        async for message in request_iterator:
            expected = message.sha256 or expected
            size += len(message.chunk)
            if size > self.max_package:
                raise errors.InvalidArgument(
                    f"package exceeds the limit of {self.max_package} bytes",
                    reason="PACKAGE_TOO_LARGE",
                )
            digest.update(message.chunk)
            chunks.append(message.chunk)
        sha256 = digest.hexdigest()
        if expected and expected != sha256:
            raise errors.InvalidArgument(
                f"uploaded content has sha256 {sha256}, not the announced {expected}",
                reason="SHA256_MISMATCH",
            )
        data = b"".join(chunks)
        inspect_package(data, **self.limits)
        async with self.store.transaction() as session:
            await catalog.put_package(session, sha256, data)
        return plugin_pb2.UploadPluginPackageResponse(sha256=sha256, size=size)

    async def GetPlugin(
        self, request: plugin_pb2.GetPluginRequest, context: Context
    ) -> plugin_pb2.Plugin:
        plugin_id = names.parse(request.name, names.PLUGINS)
        async with self.store.reader() as session:
            return await self._message(session, await catalog.get_plugin(session, plugin_id))

    async def ListPlugins(
        self, request: plugin_pb2.ListPluginsRequest, context: Context
    ) -> plugin_pb2.ListPluginsResponse:
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token)
        async with self.store.reader() as session:
            rows, more = await paging.read_page(
                lambda limit: catalog.list_plugins(session, after, limit), size
            )
            sizes = await catalog.package_sizes(session, (r.sha256 for r in rows))
        return plugin_pb2.ListPluginsResponse(
            plugins=[conversions.plugin_message(r, sizes.get(r.sha256, 0)) for r in rows],
            next_page_token=paging.encode(rows[-1].id) if more else "",
        )

    async def UpdatePlugin(
        self, request: plugin_pb2.UpdatePluginRequest, context: Context
    ) -> plugin_pb2.Plugin:
        """The alert servers switch first, the row after: a failed load leaves the row as it
        was without touching it, and a row that cannot be written switches them back.

        Holding the row's transaction across the load is no option: on SQLite every write
        transaction holds the one writer lock, which the runners' progress writes (that a
        hot swap waits for) need.
        """
        plugin_id = names.parse(request.plugin.name, names.PLUGINS, "plugin.name")
        populated = {f.name for f, _ in request.plugin.ListFields()}  # non-empty (AIP-134)
        paths = validation.mask_paths(request.update_mask.paths, _UPDATABLE, populated)
        async with self.store.reader() as session:
            current = await catalog.get_plugin(session, plugin_id)
        refusals.check_etag("plugin", request.plugin.name, current.revision, request.plugin.etag)
        isolation = current.isolation
        if "isolation" in paths:
            isolation = self._isolation(request.plugin.isolation, isolation)
        package = await self._new_package(request, plugin_id, isolation)
        sha256 = package.info.sha256 if package is not None else current.sha256
        switched = (sha256, isolation) != (current.sha256, current.isolation)
        try:
            if switched:  # hot swap to the new package or isolation mode
                await self.fleet.activate_plugin(plugin_id, sha256, isolation)
            async with self.store.transaction() as session:
                row = await catalog.get_plugin(session, plugin_id, for_update=True)
                refusals.check_etag(
                    "plugin", request.plugin.name, row.revision, request.plugin.etag
                )
                if "display_name" in paths:
                    row.display_name = request.plugin.display_name
                if "isolation" in paths:
                    row.isolation = isolation
                if package is not None:
                    await self._check_instances(session, plugin_id, package.form)
                    package.write_to(row)
                if switched and (row.sha256, row.isolation) != (sha256, isolation):
                    raise errors.Aborted(
                        f"plugin {request.plugin.name} was changed by another call while the "
                        "alert servers switched; read it again",
                        reason="CONCURRENT_UPDATE",
                    )
                row.revision += 1
                row.update_time = utcnow()
        except BaseException:
            await self._undo_switch(plugin_id, switched, package)
            raise
        if sha256 != current.sha256:
            async with self.store.transaction() as session:
                await catalog.drop_package_if_unused(session, current.sha256)
        async with self.store.reader() as session:
            return await self._message(session, row)

    async def _new_package(
        self, request: plugin_pb2.UpdatePluginRequest, plugin_id: str, isolation: str
    ) -> _NewPackage | None:
        """The request's package, checked by an alert server and stored (packages are
        content-addressed: one nobody uses goes again), or None when it brings none."""
        if request.WhichOneof("package_source") is None:
            return None
        info, data = await self._package(request)
        form = await self._probe_form(plugin_id, info, data, isolation)
        async with self.store.transaction() as session:
            await catalog.put_package(session, info.sha256, data)
        return _NewPackage(info, form)

    async def _undo_switch(
        self, plugin_id: str, switched: bool, package: _NewPackage | None
    ) -> None:
        """After a failed update: the alert servers back on what the row says (a failed
        load left them there already), and the new package gone if nothing uses it."""
        with contextlib.suppress(Exception):
            if switched:
                async with self.store.reader() as session:
                    row = await catalog.get_plugin(session, plugin_id)
                await self.fleet.activate_plugin(plugin_id, row.sha256, row.isolation)
        if package is not None:
            with contextlib.suppress(Exception):
                async with self.store.transaction() as session:
                    await catalog.drop_package_if_unused(session, package.info.sha256)

    @staticmethod
    async def _message(session: Any, row: Plugin) -> plugin_pb2.Plugin:
        sizes = await catalog.package_sizes(session, [row.sha256])
        return conversions.plugin_message(row, sizes.get(row.sha256, 0))

    async def _check_instances(
        self, session: Any, plugin_id: str, form: list[dict[str, Any]]
    ) -> None:
        """A new version must accept every existing instance's params."""
        problems = []
        for iid in await catalog.instance_ids_of_plugin(session, plugin_id):
            inst = await catalog.get_instance(session, iid)
            try:
                sdk_params.validate_params(form, json.loads(inst.params_json))
            except ParamValidationError as exc:
                problems.append(f"{names.instance_name(iid)}: {exc}")
        if problems:
            raise errors.FailedPrecondition(
                "the new package's params do not accept existing instances: " + "; ".join(problems),
                reason="INSTANCES_INCOMPATIBLE",
            )

    async def DeletePlugin(
        self, request: plugin_pb2.DeletePluginRequest, context: Context
    ) -> empty_pb2.Empty:
        plugin_id = names.parse(request.name, names.PLUGINS)
        async with self.store.transaction() as session:
            row = await catalog.get_plugin(session, plugin_id, for_update=True)
            refusals.check_etag("plugin", request.name, row.revision, request.etag)
            users = await catalog.instance_ids_of_plugin(session, plugin_id)
            if users:
                shown = ", ".join(names.instance_name(i) for i in users[:10])
                raise errors.FailedPrecondition(
                    f"plugin {request.name} is used by {len(users)} listener instance(s): {shown}; "
                    "delete them first",
                    reason="PLUGIN_IN_USE",
                )
            await session.delete(row)
            await session.flush()
            await catalog.drop_package_if_unused(session, row.sha256)
        await self.fleet.unload_plugin(plugin_id)
        return empty_pb2.Empty()
