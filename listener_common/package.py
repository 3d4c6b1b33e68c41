"""Plugin packages: checking an uploaded zip, and building one from a source folder.

A package is a zip with ``listener-plugin.toml`` at its root plus the plugin's modules and any
pure-Python libraries it bundles as top-level packages. :func:`inspect_package` is what the API
server runs on every upload before it stores anything, so it rejects everything that could
escape the package's directory or exhaust the host, with a message an admin can act on; it only
reads the manifest, never the plugin's code.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from listener_common._version import __version__
from listener_common.errors import PackageError
from listener_common.manifest import MANIFEST_NAME, Manifest, parse_manifest

__all__ = ["RESERVED_NAMES", "PackageInfo", "build_package", "inspect_package"]

#: Top-level names a package may not bundle: the host always provides these.
RESERVED_NAMES = frozenset(
    {"listener_common", "api_server", "alert_server", "event_store", "listener_core", "listener"}
)

_DRIVE = re.compile(r"^[A-Za-z]:")
_MODULE_SUFFIXES = (".py", ".pyc")
# Zip timestamps cannot go earlier; a fixed one makes builds byte-for-byte reproducible.
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class PackageInfo:
    """What :func:`inspect_package` learned about a valid package."""

    manifest: Manifest
    sha256: str
    size: int
    #: Top-level modules and packages in the zip: the import names the loader serves from it.
    top_level_names: frozenset[str]


def _check_path(name: str) -> None:
    if not name or name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise PackageError(f"package entry {name!r} has an absolute path")
    if ".." in re.split(r"[/\\]", name):
        raise PackageError(f"package entry {name!r} has a '..' path component")


def _module_stem(name: str) -> str | None:
    for suffix in _MODULE_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return None


def inspect_package(
    data: bytes, *, max_files: int = 2000, max_uncompressed: int = 200 * 2**20
) -> PackageInfo:
    """Validates a package zip and reads its manifest; raises PackageError saying what is wrong.

    Rejects: data that is not a zip; more than ``max_files`` entries or more than
    ``max_uncompressed`` bytes unpacked; absolute or ``..`` paths, symbolic links, encrypted or
    duplicate entries; no manifest at the root (or an invalid one: ManifestError); bundling a
    reserved top-level name (:data:`RESERVED_NAMES`); an entry module missing from the zip; an
    ``sdk`` range this SDK does not satisfy.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        ValueError,
        EOFError,
        OSError,
        NotImplementedError,  # e.g. a directory claiming to span several disks (fuzzing)
    ) as exc:
        raise PackageError(f"package is not a valid zip file: {exc}") from exc
    with archive:
        entries = archive.infolist()
        if len(entries) > max_files:
            raise PackageError(f"package has {len(entries)} entries; the limit is {max_files}")
        names: set[str] = set()
        total = 0
        for entry in entries:
            name = entry.filename
            _check_path(name)
            if stat.S_ISLNK(entry.external_attr >> 16):
                raise PackageError(f"package entry {name!r} is a symbolic link")
            if entry.flag_bits & 0x1:
                raise PackageError(f"package entry {name!r} is encrypted")
            if name in names:
                raise PackageError(f"package entry {name!r} appears twice")
            names.add(name)
            total += entry.file_size
        if total > max_uncompressed:
            raise PackageError(f"package unpacks to {total} bytes; the limit is {max_uncompressed}")
        if MANIFEST_NAME not in names:
            raise PackageError(f"package has no {MANIFEST_NAME} at its root")
        try:
            manifest = parse_manifest(archive.read(MANIFEST_NAME))
        # ValueError: a corrupt header offset ("negative seek value"); NotImplementedError:
        # an unsupported compression method. Both are the zip's fault, found by fuzzing.
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            RuntimeError,
            ValueError,
            NotImplementedError,
        ) as exc:
            raise PackageError(f"cannot read {MANIFEST_NAME} from the package: {exc}") from exc

    roots: set[str] = set()
    top_level: set[str] = set()
    for name in names:
        first, sep, _ = name.partition("/")
        stem = _module_stem(name)
        root = first if sep else (stem or first)
        roots.add(root)
        if stem is not None and root.isidentifier():
            top_level.add(root)
    reserved = sorted(roots & RESERVED_NAMES)
    if reserved:
        raise PackageError(
            f"package bundles {', '.join(reserved)}: reserved for the host, which provides it"
        )

    module_path = manifest.entry_module.replace(".", "/")
    candidates = [f"{module_path}{suffix}" for suffix in _MODULE_SUFFIXES]
    candidates += [f"{module_path}/__init__{suffix}" for suffix in _MODULE_SUFFIXES]
    if not names.intersection(candidates):
        raise PackageError(
            f"entry module {manifest.entry_module!r} is not in the package "
            f"(expected {module_path}.py or {module_path}/__init__.py)"
        )
    if not manifest.sdk_compatible():
        raise PackageError(
            f"{manifest.name} {manifest.version} needs listener_common {manifest.sdk}; "
            f"this is {__version__}"
        )
    return PackageInfo(
        manifest=manifest,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        top_level_names=frozenset(top_level),
    )


#: Top-level folders of a plugin project that are never packed.
_LEFT_OUT = frozenset({"tests", "dist", "build"})


def _source_files(src_dir: Path, skip_dir: Path) -> list[str]:
    """Relative POSIX paths to pack: no dotfiles, ``__pycache__``, bytecode, build output (the
    ``out`` folder, and a top-level ``dist/`` or ``build/``: a folder built, bumped and built
    again must not carry its earlier packages inside), nor the project's own ``tests/``
    folder (a plugin's tests run on the author's machine)."""
    found: list[str] = []
    for root, dirs, files in os.walk(src_dir):
        here = Path(root)
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".")
            and d != "__pycache__"
            and (here / d).resolve() != skip_dir
            and not (here == src_dir and d in _LEFT_OUT)
        ]
        for file in files:
            if file.startswith(".") or file.endswith((".pyc", ".pyo")):
                continue
            found.append((here / file).relative_to(src_dir).as_posix())
    return sorted(found)


def build_package(src_dir: Path, out_dir: Path) -> Path:
    """Zips a plugin folder into ``out_dir/<name>-<version>.zip`` and returns that path.

    The build is deterministic (sorted entries, fixed timestamps and modes) so the same source
    gives the same bytes and so the same sha256: reinstalling it is recognisably a no-op. The
    result is checked with :func:`inspect_package` before it is written, so a bad package never
    lands in ``out_dir``.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    manifest_path = src_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise PackageError(f"{src_dir}: no {MANIFEST_NAME}")
    manifest = parse_manifest(manifest_path.read_bytes())

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel in _source_files(src_dir, out_dir.resolve()):
            entry = zipfile.ZipInfo(rel, date_time=_FIXED_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.create_system = 3  # Unix, so the mode below means the same everywhere
            entry.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(entry, (src_dir / rel).read_bytes(), compresslevel=9)
    data = buffer.getvalue()
    inspect_package(data)

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest.name}-{manifest.version}.zip"
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    return target
