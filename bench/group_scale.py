"""Scenarios 8, 9 and 10: many idle instances, install/uninstall cycles, a restart with
100 plugins and 1,000 instances."""

from __future__ import annotations

import asyncio
import functools
import time

from bench import plugin
from bench.client import Admin, gather_limited
from bench.procs import CpuMeter, Servers, rss_mb
from bench.scenarios import SCENARIOS, Bench, Row


async def scale(b: Bench) -> None:
    s = b.sizes
    async with b.pair("scale") as (servers, admin, empty_start):
        pid = servers.pid("alert_server")
        empty_rss = rss_mb(pid)
        plugin_ids = [f"idle-{k:03d}" for k in range(s.idle_plugins)]
        started = time.perf_counter()
        await gather_limited(
            [functools.partial(admin.install, plugin.package(name=p)) for p in plugin_ids], 4
        )
        install_seconds = time.perf_counter() - started
        ids = [f"idle-{k:04d}" for k in range(s.idle_instances)]
        started = time.perf_counter()
        await gather_limited(
            [
                functools.partial(admin.create_instance, i, plugin_ids[k % len(plugin_ids)])
                for k, i in enumerate(ids)
            ],
            16,
        )
        await admin.wait_instances(ids)
        create_seconds = time.perf_counter() - started
        await asyncio.sleep(min(2.0, s.idle_seconds))
        meter = CpuMeter(pid)
        await asyncio.sleep(s.idle_seconds)
        before = {"cpu_pct": round(meter.percent(), 2), "rss_mb": round(rss_mb(pid), 1)}

        await _restart(b, servers, admin, ids, len(plugin_ids), empty_start)

        pid = servers.pid("alert_server")
        await asyncio.sleep(min(2.0, s.idle_seconds))
        meter = CpuMeter(pid)
        await asyncio.sleep(s.idle_seconds)
        cpu, rss = meter.percent(), rss_mb(pid)
        b.add(
            Row(
                "8",
                SCENARIOS["8"] + " (CPU)",
                cpu,
                "% core",
                "<= 2 % of a core, RSS <= 250 MB",
                cpu <= 2 and rss <= 250,
                details={
                    "rss_mb": round(rss, 1),
                    "empty_server_rss_mb": round(empty_rss, 1),
                    "before_restart": before,
                    "instances": len(ids),
                    "plugins": len(plugin_ids),
                    "install_seconds": round(install_seconds, 2),
                    "create_instances_seconds": round(create_seconds, 2),
                    "sampled_seconds": s.idle_seconds,
                },
            )
        )


async def cycles(b: Bench) -> None:
    s = b.sizes
    async with b.pair("cycles") as (servers, admin, _):
        pid = servers.pid("alert_server")

        async def cycle(i: int) -> None:
            await admin.install(plugin.package(name="cycle", version=f"1.0.{i}"))
            await admin.uninstall("cycle")

        for i in range(s.cycle_warmup):
            await cycle(i)
        await asyncio.sleep(1.0)
        rss0 = rss_mb(pid)
        started = time.perf_counter()
        for i in range(s.cycle_warmup, s.cycle_warmup + s.cycles):
            await cycle(i)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(1.5)  # the host's first leak check runs 0.25 s after an unload
        rss1 = rss_mb(pid)
        status = await admin.status()
        loaded = [p.plugin_id for p in status.plugins if p.plugin_id == "cycle"]
        leaked = [f"{p.plugin_id} {p.version}: {'; '.join(p.leaks)}" for p in status.leaked_plugins]
        growth = rss1 - rss0
        b.add(
            Row(
                "9",
                SCENARIOS["9"] + " (RSS growth)",
                growth,
                "MB",
                "RSS growth <= 10 MB, 0 modules left",
                growth <= 10 and not loaded and not leaked,
                details={
                    "cycles": s.cycles,
                    "rss_before_mb": round(rss0, 1),
                    "rss_after_mb": round(rss1, 1),
                    "loaded_left": len(loaded),
                    "leaked_left": len(leaked),
                    "leaks": leaked[:5],
                    "seconds_per_cycle": round(elapsed / max(s.cycles, 1), 4),
                },
            )
        )


async def _restart(
    b: Bench, servers: Servers, admin: Admin, ids: list[str], plugins: int, empty_start: float
) -> None:
    """10: a restart must load every plugin and start every instance again."""
    s = b.sizes
    servers.stop_one("alert_server")
    started = time.perf_counter()
    serving = await servers.start("alert_server")
    await admin.wait_instances(ids, timeout=max(s.timeout, 300))
    ready = time.perf_counter() - started
    b.add(
        Row(
            "10",
            SCENARIOS["10"],
            ready,
            "s",
            "<= 5 s",
            ready <= 5,
            "empty_alert_start_s",
            empty_start,
            {
                "health_serving_s": round(serving, 3),
                "plugins": plugins,
                "instances": len(ids),
            },
        )
    )
