"""Plugin packages on local disk, named by content hash, fetched from the store when absent.

The zip importer reads packages from files, so each alert server keeps a copy of every
package it loads. Files are written atomically and re-verified before use: a file whose
hash does not match (a torn write, tampering) is fetched again from the database.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from event_store import catalog
from event_store.errors import PackageNotFound
from event_store.store import Store
from listener_core import errors


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PackageCache:
    def __init__(self, directory: Path, store: Store) -> None:
        self.directory = directory
        self.store = store
        directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.directory / f"{sha256}.zip"

    def put(self, sha256: str, data: bytes) -> Path:
        if sha256_of(data) != sha256:
            raise ValueError(f"package content does not match sha256 {sha256}")
        path = self.path_for(sha256)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def discard(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def read_verified(self, sha256: str) -> bytes | None:
        path = self.path_for(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data if sha256_of(data) == sha256 else None

    async def fetch(self, sha256: str) -> tuple[Path, bytes]:
        """The package's file and bytes, from disk if intact, else from the store."""
        data = self.read_verified(sha256)
        if data is not None:
            return self.path_for(sha256), data
        async with self.store.reader() as session:
            try:
                data = (await catalog.get_package(session, sha256)).data
            except PackageNotFound:
                raise errors.NotFound(
                    f"package {sha256} not found; upload it first", reason="PACKAGE_NOT_FOUND"
                ) from None
        return self.put(sha256, data), data
