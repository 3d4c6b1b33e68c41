"""200 install/uninstall cycles at loader level keep sys.modules and RSS flat."""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

from alert_server.loader import ROOT, PackageLoader, Residue
from listener_common.package import inspect_package
from tests.support.samples import make_zip, manifest

# 200 KB of fresh objects per load: a leak of every version would add ~40 MB in 200 cycles.
PLUGIN = """
import json, logging
from typing import Optional
import vlib.core
from listener_common import ListenerPlugin

BIG = [str(i) * 4 for i in range(20_000)]
log = logging.getLogger(__name__)

class P(ListenerPlugin):
    async def on_event(self, event):
        log.debug("%s", json.dumps(event.to_dict()))
        return vlib.core.VERSION

HINT = Optional[P]
"""


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_200_install_uninstall_cycles_stay_flat(tmp_path: Path) -> None:
    data = make_zip(
        {
            "plug.py": PLUGIN,
            "vlib/__init__.py": "",
            "vlib/core.py": "from . import util\nVERSION = util.V\n",
            "vlib/util.py": "V = '1'\n",
        },
        manifest("cycler", "plug:P"),
    )
    info = inspect_package(data)
    path = tmp_path / f"{info.sha256}.zip"
    path.write_bytes(data)
    loader = PackageLoader()
    residues: list[Residue] = []
    try:

        def cycle() -> None:
            loaded = loader.load("cycler", info, path)
            loaded.plugin_class()
            residues.append(loader.unload(loaded))

        for _ in range(20):  # warm-up: caches, allocator arenas
            cycle()
        gc.collect()
        modules_before, rss_before = len(sys.modules), rss_bytes()
        blocks_before = sys.getallocatedblocks()
        started = time.perf_counter()
        for i in range(200):
            cycle()
            if i % 50 == 49:
                gc.collect()
        elapsed = time.perf_counter() - started
        gc.collect()
        modules_after, rss_after = len(sys.modules), rss_bytes()
        blocks_after = sys.getallocatedblocks()
    finally:
        loader.close()
    growth_mb = (rss_after - rss_before) / 2**20
    print(
        f"\n[figures] 200 cycles in {elapsed:.2f}s ({elapsed / 200 * 1000:.1f} ms each): "
        f"sys.modules {modules_before} -> {modules_after}, "
        f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB ({growth_mb:+.2f} MiB), "
        f"Python heap blocks {blocks_after - blocks_before:+d}"
    )
    assert modules_after == modules_before
    assert not [n for n in sys.modules if n.startswith(ROOT + ".")]
    assert [r for r in residues if r.survivors()] == []
    # Keeping every version would add ~20,000 blocks and ~1 MiB per cycle; the RSS bound is
    # generous because the allocator returns freed arenas to the system when it likes.
    assert blocks_after - blocks_before < 5_000
    assert growth_mb < 24, f"RSS grew {growth_mb:.1f} MiB over 200 cycles"
