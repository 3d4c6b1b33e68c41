"""Manifests, package inspection (every rejection) and the deterministic builder."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import listener_common
from listener_common import Manifest, ManifestError, PackageError
from listener_common.build import main as build_main
from listener_common.manifest import MANIFEST_NAME, parse_manifest
from listener_common.package import RESERVED_NAMES, build_package, inspect_package

REPO = Path(__file__).resolve().parents[2]
MANIFEST = 'name = "demo"\nversion = "1.2.0"\nentry = "demo_pkg.plugin:Demo"\nsdk = ">=1,<2"\n'
PLUGIN = "from listener_common import ListenerPlugin\n\nclass Demo(ListenerPlugin):\n    pass\n"


def make_zip(files: dict[str, str | bytes], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        if symlink is not None:
            link = zipfile.ZipInfo(symlink)
            link.create_system = 3
            link.external_attr = 0o120777 << 16
            archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def good_files(**extra: str | bytes) -> dict[str, str | bytes]:
    return {
        MANIFEST_NAME: MANIFEST,
        "demo_pkg/__init__.py": "",
        "demo_pkg/plugin.py": PLUGIN,
        "helper.py": "X = 1\n",
        "vendored/__init__.py": "",
        "vendored/sub/mod.py": "",
        "data/readme.txt": "not code",
        "README.md": "# demo\n",
        **extra,
    }


def test_the_sdk_imports_no_server_code_or_heavy_dependency() -> None:
    """Plugin authors install the SDK alone: it must not drag in the servers or their stack."""
    script = (
        "import sys\n"
        "import listener_common, listener_common.package, listener_common.build\n"
        "from listener_common import ListenerPlugin, events, params\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    for forbidden in (
        "api_server",
        "alert_server",
        "event_store",
        "listener_core",
        "listener",
        "grpc",
        "google",
        "sqlalchemy",
    ):
        assert f"'{forbidden}'" not in loaded, forbidden
    assert "'packaging'" in loaded and "'listener_common'" in loaded


# -- manifest ----------------------------------------------------------------------------------


def test_parse_manifest() -> None:
    manifest = parse_manifest(
        (MANIFEST + 'isolation = "process"\ndisplay_name = "Demo"\ndescription = "d"\n').encode()
    )
    assert manifest == Manifest(
        name="demo",
        version=Version("1.2.0"),
        entry="demo_pkg.plugin:Demo",
        sdk=SpecifierSet(">=1,<2"),
        isolation="process",
        description="d",
        display_name="Demo",
    )
    assert (manifest.entry_module, manifest.entry_class) == ("demo_pkg.plugin", "Demo")


def test_manifest_defaults() -> None:
    manifest = parse_manifest(b'name = "a"\nversion = "1"\nentry = "a:A"\n')
    assert str(manifest.sdk) == ">=1" and manifest.isolation == "namespace"
    assert manifest.description == "" and manifest.display_name == ""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b'name = "a"\nversion = "1"\n', "missing required key 'entry'"),
        (b'version = "1"\nentry = "a:A"\n', "missing required key 'name'"),
        (b'name = "a"\nentry = "a:A"\n', "missing required key 'version'"),
        (
            b'name = "Bad Name"\nversion = "1"\nentry = "a:A"\n',
            "'name' 'Bad Name' is not a valid plugin name: 1-63 characters",
        ),
        (b'name = "a"\nversion = "one"\nentry = "a:A"\n', "'version' 'one' is not a PEP 440"),
        (b'name = "a"\nversion = "1"\nentry = "a.A"\n', "'entry' 'a.A' must look like"),
        (b'name = "a"\nversion = "1"\nentry = "a:A"\nsdk = "1+"\n', "'sdk' '1+' is not"),
        (b'name = "a"\nversion = "1"\nentry = "a:A"\nisolation = "vm"\n', "'isolation' 'vm'"),
        (b'name = "a"\nversion = 1\nentry = "a:A"\n', "'version' must be a string, not int"),
        (b'name = "a"\nversion = "1"\nentry = "a:A"\nisloation = "x"\n', "unknown key(s) 'isl"),
        (b'name = "a\nversion = "1"\n', "not valid TOML"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_manifest_errors_name_the_key(text: bytes, words: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    assert words in str(caught.value)
    assert isinstance(caught.value, PackageError)


def test_sdk_compatibility() -> None:
    manifest = parse_manifest(MANIFEST.encode())
    assert listener_common.__version__.startswith("1.")  # MANIFEST says ">=1,<2"
    assert manifest.sdk_compatible()
    assert manifest.sdk_compatible("1.9")
    assert not manifest.sdk_compatible("2.0.0")
    assert not manifest.sdk_compatible("0.9")


# -- inspect_package ---------------------------------------------------------------------------


def test_inspect_a_good_package() -> None:
    data = make_zip(good_files())
    info = inspect_package(data)
    assert info.manifest.name == "demo" and str(info.manifest.version) == "1.2.0"
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert info.top_level_names == frozenset({"demo_pkg", "helper", "vendored"})


def test_entry_may_be_a_package_init() -> None:
    files = good_files()
    files[MANIFEST_NAME] = MANIFEST.replace("demo_pkg.plugin:Demo", "demo_pkg:Demo")
    assert inspect_package(make_zip(files)).manifest.entry_module == "demo_pkg"


def expect_error(data: bytes, words: str, **limits: int) -> None:
    with pytest.raises(PackageError) as caught:
        inspect_package(data, **limits)
    assert words in str(caught.value), str(caught.value)


def test_not_a_zip() -> None:
    expect_error(b"this is not a zip", "not a valid zip file")
    expect_error(b"", "not a valid zip file")


def test_no_manifest_at_the_root() -> None:
    files = good_files()
    files["nested/" + MANIFEST_NAME] = files.pop(MANIFEST_NAME)
    expect_error(make_zip(files), f"no {MANIFEST_NAME} at its root")


@pytest.mark.parametrize("name", ["/etc/cron.d/x", "\\windows\\x.py", "C:/x.py"])
def test_absolute_paths(name: str) -> None:
    expect_error(make_zip(good_files(**{name: "x"})), "absolute path")


@pytest.mark.parametrize("name", ["../escape.py", "demo_pkg/../../escape.py", "a\\..\\b.py"])
def test_dot_dot_paths(name: str) -> None:
    expect_error(make_zip(good_files(**{name: "x"})), "'..' path component")


def test_symlink_entries() -> None:
    expect_error(make_zip(good_files(), symlink="demo_pkg/link.py"), "is a symbolic link")


def test_too_many_files() -> None:
    data = make_zip(good_files())
    expect_error(data, "has 8 entries; the limit is 7", max_files=7)
    assert inspect_package(data, max_files=8).manifest.name == "demo"


def test_too_large_uncompressed() -> None:
    data = make_zip(good_files(**{"demo_pkg/big.bin": b"\0" * 100_000}))
    expect_error(data, "the limit is 50000", max_uncompressed=50_000)
    assert inspect_package(data, max_uncompressed=200_000).size == len(data)


@pytest.mark.parametrize("reserved", sorted(RESERVED_NAMES))
@pytest.mark.parametrize("form", ["{}/__init__.py", "{}.py"])
def test_reserved_names(reserved: str, form: str) -> None:
    data = make_zip(good_files(**{form.format(reserved): ""}))
    expect_error(data, f"bundles {reserved}: reserved for the host")


def test_reserved_names_are_the_host_packages() -> None:
    host_packages = {
        "listener_common",
        "api_server",
        "alert_server",
        "event_store",
        "listener_core",
        "listener",
    }
    assert host_packages == RESERVED_NAMES


def test_entry_module_missing() -> None:
    files = good_files()
    del files["demo_pkg/plugin.py"]
    expect_error(make_zip(files), "entry module 'demo_pkg.plugin' is not in the package")


def test_sdk_range_not_satisfied() -> None:
    files = good_files()
    files[MANIFEST_NAME] = MANIFEST.replace(">=1,<2", ">=2")
    expect_error(
        make_zip(files),
        f"demo 1.2.0 needs listener_common >=2; this is {listener_common.__version__}",
    )


def test_invalid_manifest_is_a_manifest_error() -> None:
    files = good_files()
    files[MANIFEST_NAME] = 'name = "demo"\nversion = "1"\n'
    with pytest.raises(ManifestError, match="entry"):
        inspect_package(make_zip(files))


def test_duplicate_entries() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in good_files().items():
            archive.writestr(name, content)
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr(MANIFEST_NAME, 'name = "evil"\n')
    expect_error(buffer.getvalue(), f"{MANIFEST_NAME!r} appears twice")


# -- build_package -----------------------------------------------------------------------------


def plugin_tree(root: Path) -> Path:
    src = root / "demo"
    for name, content in good_files().items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    (src / "demo_pkg" / "__pycache__").mkdir()
    (src / "demo_pkg" / "__pycache__" / "plugin.cpython-311.pyc").write_bytes(b"junk")
    (src / "demo_pkg" / "stale.pyc").write_bytes(b"junk")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    (src / ".env").write_text("SECRET=1")
    return src


def test_build_package(tmp_path: Path) -> None:
    src = plugin_tree(tmp_path)
    built = build_package(src, tmp_path / "out")
    assert built == tmp_path / "out" / "demo-1.2.0.zip"
    with zipfile.ZipFile(built) as archive:
        entries = archive.infolist()
    assert [e.filename for e in entries] == sorted(good_files())
    assert all(e.date_time == (1980, 1, 1, 0, 0, 0) for e in entries)
    assert all(e.compress_type == zipfile.ZIP_DEFLATED for e in entries)
    assert inspect_package(built.read_bytes()).manifest.name == "demo"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["demo-1.2.0.zip"]


def test_build_is_deterministic(tmp_path: Path) -> None:
    src = plugin_tree(tmp_path)
    first = build_package(src, tmp_path / "one").read_bytes()
    for path in src.rglob("*"):
        os.utime(path, (1_900_000_000, 1_900_000_000))
    (src / "helper.py").chmod(0o755)
    second = build_package(src, tmp_path / "two").read_bytes()
    assert first == second


def test_build_skips_its_own_output_inside_the_source(tmp_path: Path) -> None:
    src = plugin_tree(tmp_path)
    build_package(src, src / "dist")
    again = build_package(src, src / "dist")
    with zipfile.ZipFile(again) as archive:
        assert not any(name.startswith("dist/") for name in archive.namelist())


def test_build_of_a_folder_leaves_out_earlier_builds_wherever_they_go(tmp_path: Path) -> None:
    """``listenerctl plugin update NAME FOLDER`` builds into a temporary folder: an earlier
    ``plugin build FOLDER --out FOLDER/dist`` must not ride along (it did, a zip in a zip)."""
    src = plugin_tree(tmp_path)
    build_package(src, src / "dist")
    (src / "build").mkdir()
    (src / "build" / "leftover.py").write_text("x = 1\n")
    (src / "demo_pkg" / "dist").mkdir()  # only the top-level folders are build output
    (src / "demo_pkg" / "dist" / "data.txt").write_text("kept\n")
    again = build_package(src, tmp_path / "elsewhere")
    with zipfile.ZipFile(again) as archive:
        names = archive.namelist()
    assert not [n for n in names if n.startswith(("dist/", "build/"))], names
    assert "demo_pkg/dist/data.txt" in names


def test_build_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=f"no {MANIFEST_NAME}"):
        build_package(tmp_path, tmp_path / "out")


def test_build_checks_the_result_and_writes_nothing_bad(tmp_path: Path) -> None:
    src = plugin_tree(tmp_path)
    (src / "demo_pkg" / "plugin.py").unlink()
    with pytest.raises(PackageError, match="entry module"):
        build_package(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_build_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = plugin_tree(tmp_path)
    (tmp_path / "not_a_plugin").mkdir()
    out = tmp_path / "dist"
    assert build_main([str(src), str(tmp_path / "not_a_plugin"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(out / "demo-1.2.0.zip")]
    assert f"skipping {tmp_path / 'not_a_plugin'}: no {MANIFEST_NAME}" in captured.err
    assert (out / "demo-1.2.0.zip").is_file()


def test_build_cli_fails_on_a_bad_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = plugin_tree(tmp_path)
    (src / MANIFEST_NAME).write_text('name = "demo"\nversion = "x"\nentry = "a:B"\n')
    assert build_main([str(src), "--out", str(tmp_path / "dist")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {src}: ") and "'version' 'x' is not a PEP 440" in err
