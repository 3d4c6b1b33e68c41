"""Desired state: packages, plugins and listener instances.

Each function runs inside the caller's transaction and raises the store's own errors
(``event_store.errors``: plain ids, no resource names); revisions back the public etags.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from event_store.errors import InstanceNotFound, PackageNotFound, PluginNotFound
from event_store.models import ListenerInstance, Package, Plugin, utcnow


async def put_package(session: AsyncSession, sha256: str, data: bytes) -> Package:
    """Stores a package once; the same sha256 is never rewritten in place."""
    existing = await session.get(Package, sha256)
    if existing is not None:
        return existing
    pkg = Package(sha256=sha256, size=len(data), data=data, create_time=utcnow())
    session.add(pkg)
    await session.flush()
    return pkg


async def get_package(session: AsyncSession, sha256: str) -> Package:
    pkg = await session.get(Package, sha256)
    if pkg is None:
        raise PackageNotFound(sha256)
    return pkg


async def package_sizes(session: AsyncSession, sha256s: Iterable[str]) -> dict[str, int]:
    """The size of each package, in bytes, without reading the packages."""
    wanted = set(sha256s)
    if not wanted:
        return {}
    rows = await session.execute(
        select(Package.sha256, Package.size).where(Package.sha256.in_(wanted))
    )
    return {sha: int(size) for sha, size in rows}


async def drop_package_if_unused(session: AsyncSession, sha256: str) -> None:
    used = await session.scalar(
        select(func.count()).select_from(Plugin).where(Plugin.sha256 == sha256)
    )
    if not used:
        pkg = await session.get(Package, sha256)
        if pkg is not None:
            await session.delete(pkg)


async def get_plugin(session: AsyncSession, plugin_id: str, *, for_update: bool = False) -> Plugin:
    query = select(Plugin).where(Plugin.id == plugin_id)
    if for_update:
        query = query.with_for_update()
    plugin = (await session.execute(query)).scalar_one_or_none()
    if plugin is None:
        raise PluginNotFound(plugin_id)
    return plugin


async def list_plugins(session: AsyncSession, after_id: str, limit: int) -> Sequence[Plugin]:
    query = select(Plugin).where(Plugin.id > after_id).order_by(Plugin.id).limit(limit)
    return (await session.execute(query)).scalars().all()


async def all_plugins(session: AsyncSession) -> Sequence[Plugin]:
    return (await session.execute(select(Plugin).order_by(Plugin.id))).scalars().all()


async def plugins_by_id(session: AsyncSession, plugin_ids: Iterable[str]) -> dict[str, Plugin]:
    query = select(Plugin).where(Plugin.id.in_(list(plugin_ids)))
    return {p.id: p for p in (await session.execute(query)).scalars()}


async def instances_by_id(
    session: AsyncSession, instance_ids: Sequence[str]
) -> dict[str, ListenerInstance]:
    query = select(ListenerInstance).where(ListenerInstance.id.in_(instance_ids))
    return {i.id: i for i in (await session.execute(query)).scalars()}


async def instance_ids_of_plugin(session: AsyncSession, plugin_id: str) -> list[str]:
    query = select(ListenerInstance.id).where(ListenerInstance.plugin_id == plugin_id)
    return list((await session.execute(query.order_by(ListenerInstance.id))).scalars().all())


async def get_instance(
    session: AsyncSession, instance_id: str, *, for_update: bool = False
) -> ListenerInstance:
    query = select(ListenerInstance).where(ListenerInstance.id == instance_id)
    if for_update:
        query = query.with_for_update()
    inst = (await session.execute(query)).scalar_one_or_none()
    if inst is None:
        raise InstanceNotFound(instance_id)
    return inst


async def list_instances(
    session: AsyncSession, after_id: str, limit: int
) -> Sequence[ListenerInstance]:
    query = (
        select(ListenerInstance)
        .where(ListenerInstance.id > after_id)
        .order_by(ListenerInstance.id)
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()
