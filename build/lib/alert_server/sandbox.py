"""The sandbox of a process-isolated plugin's child: what it inherits and what it may read.

Three layers, each where the machine allows it:

* **A scrubbed environment** (:func:`child_environment`): the child gets ``PATH``, the locale,
  the time zone, TLS and proxy settings and the ``PYTHON*`` variables it needs to run — never
  ``LISTENER_*`` (the secret key, the tokens, the database URL) nor anything else of the alert
  server's environment.
* **Reads confined by Landlock** (:func:`confine_reads`, Linux 5.13 and later; applied by the
  child itself, after it has read its package and before any plugin code runs): the child may
  read the interpreter, the installed libraries, the host's own code, system files it needs
  (``/usr``, ``/lib``, TLS certificates, name resolution, ``/dev``), its own ``/proc/self``, a
  private copy of its package, and the paths of ``process_read_paths`` — nothing else. So not
  the data directory (``secret.key``, the SQLite database, other packages), not the config
  file, not ``/proc/<alert server>/environ``; and Landlock also keeps it from tracing or
  signalling processes outside its sandbox, the alert server included. Writing is not
  confined (plugins write files, e.g. the logger plugin).
* **Another user** (``process_user``): when the alert server runs as root or holds
  CAP_SETUID, children can run as an unprivileged user with no supplementary groups; the
  file permissions then apply on top of the above. Python must be installed where that user
  can read it, which the alert server checks at start (:func:`check_user`).

What it does not stop: the network (a child can reach whatever the alert server's host can,
a database that trusts local connections included), the CPU and disk beyond the limits of
``alert_server.plugin_child``, and a kernel without Landlock (then only the environment and
the user apply; the alert server logs which layers are in effect).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent

#: Variables a child keeps (exact names), and prefixes of kept names. Everything else,
#: ``LISTENER_*`` first of all, stays with the alert server.
_KEEP = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "PYTHONFAULTHANDLER",
        "VIRTUAL_ENV",
    }
)
_KEEP_PREFIXES = ("LC_",)


def child_environment(parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a plugin child starts with: only what running Python needs."""
    parent = os.environ if parent is None else parent
    env = {
        k: v
        for k, v in parent.items()
        if (k in _KEEP or k.startswith(_KEEP_PREFIXES)) and not k.startswith("LISTENER_")
    }
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"  # a plugin's prints reach the log when printed
    env["MALLOC_ARENA_MAX"] = parent.get("MALLOC_ARENA_MAX", "2")  # arenas eat RLIMIT_AS
    env.setdefault("PATH", os.defpath)
    return env


# -- another user -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildUser:
    """The user and group children run as (no supplementary groups)."""

    name: str
    uid: int
    gid: int

    def popen_args(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "cwd": "/"}


def may_switch_user() -> bool:
    """Whether this process may start children as another user: root, or CAP_SETUID and
    CAP_SETGID in its effective set."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
                return bool(caps & (1 << 7)) and bool(caps & (1 << 6))  # SETUID, SETGID
    except OSError:
        pass
    return False


def resolve_user(spec: str) -> ChildUser:
    """``name``, ``uid`` or ``uid:gid``; raises ValueError saying what is wrong."""
    name, _, group = spec.partition(":")
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        if not name.isdigit():
            raise ValueError(f"no user {name!r} on this host") from None
        uid, gid = int(name), int(group) if group.isdigit() else int(name)
        return ChildUser(name, uid, gid)
    gid = int(group) if group.isdigit() else entry.pw_gid
    return ChildUser(entry.pw_name, entry.pw_uid, gid)


def readable_by_others(paths: Iterable[Path]) -> bool:
    """Whether users other than the owner (no shared group) can reach and read ``paths``:
    every directory above them searchable by others, each file readable by others. A quick
    check for the automatic choice of ``process_user``; ACLs and groups are not considered."""
    for path in paths:
        path = path.resolve()
        try:
            if not path.stat().st_mode & 0o004:
                return False
            for parent in path.parents:
                if not parent.stat().st_mode & 0o001:
                    return False
        except OSError:
            return False
    return True


def choose_user(spec: str, python: str) -> tuple[ChildUser | None, str]:
    """The user children run as for config ``process_user``, and a line saying why.

    Raises ValueError when a configured user cannot be used."""
    if spec:
        if not may_switch_user():
            raise ValueError(
                f"process_user {spec!r} needs the alert server to run as root or with "
                "CAP_SETUID and CAP_SETGID"
            )
        user = resolve_user(spec)
        failure = check_user(user, python, child_environment())
        if failure is not None:
            raise ValueError(
                f"plugin children cannot run as {user.name} (uid {user.uid}): {failure}; "
                "install Python and the listener where that user can read them"
            )
        return user, f"as {user.name} (uid {user.uid})"
    if os.geteuid() != 0:
        return None, "as the alert server's own user"
    try:
        nobody = resolve_user("nobody")
    except ValueError:
        return None, "as root: there is no user nobody (set process_user)"
    needed = [Path(python), Path(os.__file__), REPO / "alert_server" / "plugin_child.py"]
    if not readable_by_others(needed):
        return None, (
            "as root: Python or the listener is not readable by nobody (set process_user "
            "to a user who can read them)"
        )
    return nobody, f"as nobody (uid {nobody.uid}), the alert server being root"


def check_user(user: ChildUser, python: str, env: Mapping[str, str]) -> str | None:
    """Why children cannot run as ``user`` (None if they can): starts the child's module as
    that user once, which fails when the interpreter or the code is not readable by it."""
    try:
        done = subprocess.run(
            [python, "-P", "-c", "import alert_server.plugin_child"],
            env=dict(env),
            capture_output=True,
            timeout=60,
            check=False,
            **user.popen_args(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {done.returncode}"
    return None


# -- Landlock ---------------------------------------------------------------------------------

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_READ_FILE, _READ_DIR = 1 << 2, 1 << 3
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_PR_SET_NO_NEW_PRIVS = 38

#: System paths any Python program may need to read: the dynamic loader and libraries, TLS
#: certificates, name resolution, users and groups, time zones, devices.
SYSTEM_READ_PATHS = (
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/bin",
    "/sbin",
    "/dev/null",
    "/dev/zero",
    "/dev/random",
    "/dev/urandom",
    "/dev/shm",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/nsswitch.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/ld.so.cache",
    "/etc/os-release",
    "/proc/self",
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or it is disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(0, int(version))


def read_paths(extra: Iterable[str] = ()) -> list[str]:
    """What a child may read: the system, the interpreter and libraries, the host's code
    (its packages, not the whole checkout, which may hold ``./data``), and ``extra``."""
    paths: list[str] = list(SYSTEM_READ_PATHS)
    paths += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    repo = REPO.resolve()
    for entry in sys.path:
        if not entry:
            continue
        resolved = Path(entry).resolve()
        if resolved == repo:
            continue  # its packages are added below
        if resolved in repo.parents or resolved == Path("/"):
            continue  # never a directory above the checkout: it would hold everything
        paths.append(str(resolved))
    paths += [str(p) for p in sorted(repo.iterdir()) if (p / "__init__.py").is_file()]
    paths += list(extra)
    return paths


def confine_reads(paths: Sequence[str], abi: int | None = None) -> bool:
    """Restricts this process (and its future children) to reading below ``paths``, for
    good. Returns False when the kernel has no Landlock; raises OSError if it fails midway."""
    abi = landlock_abi() if abi is None else abi
    if abi < 1:
        return False
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(_READ_FILE | _READ_DIR, 0, scoped)
    size = ctypes.sizeof(_RulesetAttr) if scoped else 8
    ruleset = int(libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this host
            try:
                is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
                rule = _PathBeneathAttr(_READ_FILE | (_READ_DIR if is_dir else 0), fd)
                if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0):
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return True
