"""A plugin that writes down who delivered what, and when: the chaos checker's evidence.

Each event becomes one JSON line in ``logFile``: its id and sequence, the delivering
process (``pid``) and the wall-clock time. One file per instance; every alert server
appends to it, so the file's order is the order in which deliveries happened.
"""

from __future__ import annotations

import io
import zipfile

WITNESS_PLUGIN = """
import asyncio, json, os, time
from listener_common import ListenerPlugin, params

class Witness(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.Input("logFile", title="Log file", required=True),
                params.InputNumber("delayMs", title="Delay per event (ms)", value=0)]

    async def open(self, config):
        self.path = config["logFile"]
        self.delay = (config.get("delayMs") or 0) / 1000
        self.pid = os.getpid()

    async def on_event(self, event):
        if self.delay:
            await asyncio.sleep(self.delay)
        line = json.dumps({"id": event.id, "seq": event.sequence, "pid": self.pid,
                           "t": time.time()})
        with open(self.path, "a") as fh:
            fh.write(line + "\\n")
"""

MANIFEST = 'name = "witness"\nversion = "1.0.0"\nentry = "witness:Witness"\nsdk = ">=1,<2"\n'


def witness_package() -> bytes:
    """The plugin as an installable package (zip with its manifest)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("listener-plugin.toml", MANIFEST)
        archive.writestr("witness.py", WITNESS_PLUGIN)
    return buffer.getvalue()
