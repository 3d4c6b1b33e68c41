"""A host module a careless plugin leaks into: a module-level cache and a release switch."""

from __future__ import annotations

import threading

CACHE: list[object] = []
RELEASE = threading.Event()
