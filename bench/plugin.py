"""The bench's no-op plugin, built as a real package so the alert server loads it as usual.

It takes whole batches (``on_events``) and, when given a report file, appends one line per
batch: handler time (``time.time()``), plugin version, count, first and last sequence, and
optionally every sequence. The driver reads these files to time deliveries against the
publish acks it recorded on the same clock; a file (unlike UDP) cannot drop a report, so a
missing sequence really is a lost event.
"""

from __future__ import annotations

import io
import textwrap
import zipfile

PLUGIN_SOURCE = """
import time

from listener_common import ListenerPlugin, params

VERSION = "{version}"


class BenchListener(ListenerPlugin):
    @classmethod
    def params(cls):
        return [
            params.Input("reportFile", title="Report file", value=""),
            params.Input("detail", title="Write every sequence (1)", value=""),
        ]

    async def open(self, config):
        path = config.get("reportFile") or ""
        self.out = open(path, "a", buffering=1 << 16) if path else None
        self.detail = config.get("detail") == "1"

    async def on_events(self, batch):
        out = self.out
        if out is None or not batch:
            return
        now = time.time()
        first, last = batch[0].sequence, batch[-1].sequence
        line = f"{{now:.6f}} {{VERSION}} {{len(batch)}} {{first}} {{last}}"
        if self.detail:
            line += " " + ",".join(str(e.sequence) for e in batch)
        out.write(line + "\\n")
        out.flush()

    async def close(self):
        if self.out is not None:
            self.out.close()
            self.out = None
"""


def package(name: str = "bench", version: str = "1.0.0") -> bytes:
    """A zip package of the no-op plugin under ``name`` (plugin id) and ``version``."""
    manifest = (
        f'name = "{name}"\nversion = "{version}"\n'
        'entry = "bench_listener:BenchListener"\nsdk = ">=1,<2"\n'
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("listener-plugin.toml", manifest)
        zf.writestr("bench_listener.py", textwrap.dedent(PLUGIN_SOURCE.format(version=version)))
    return buf.getvalue()
