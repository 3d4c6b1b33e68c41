"""Secret instance params (password fields) encrypted at rest, with Fernet.

The API server seals every non-empty password param before it writes an instance
(``listener_instances.params_json``); the alert server opens them when it builds the config a
plugin's ``open()`` receives. Nothing else ever sees them in clear: responses mask them, and the
store, its backups and its SQL logs hold only ``enc:v1:<Fernet token>`` values.

Values without the prefix are taken as they are, so rows written before encryption still load
(they are sealed the next time the instance's params are written).

The key is ``secret_key`` (one or more Fernet keys, comma separated: the first seals, all open,
so keys can be rotated), or else a key generated once into ``<data_dir>/secret.key`` with mode
0600. A generated key only works when every server reads the same file: servers on several hosts
(or containers) must be given the same ``secret_key``, or the alert server cannot open what the
API server sealed, and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from listener_common import params as sdk_params
from listener_core import errors
from listener_core.config import Config, ConfigError

log = logging.getLogger(__name__)

PREFIX = "enc:v1:"
KEY_FILE = "secret.key"


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


class SecretBox:
    """Seals and opens secret values with the configured keys."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        fernets = []
        for index, key in enumerate(keys):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                raise ConfigError(
                    f"config secret_key[{index}] is not a Fernet key (32 bytes, url-safe base64; "
                    "make one with: python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())')"
                ) from None
        if not fernets:
            raise ConfigError("config secret_key: no key given")
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_config(cls, config: Config) -> SecretBox:
        """The configured keys, or the key file under ``data_dir`` (created if absent)."""
        keys = [k.strip().encode() for k in config.security.secret_key.split(",") if k.strip()]
        if keys:
            return cls(keys)
        return cls([load_or_create_key(Path(config.store.data_dir) / KEY_FILE)])

    def seal(self, text: str) -> str:
        return PREFIX + self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, value: str, field: str = "") -> str:
        """The clear text of a sealed value; an unsealed (legacy) value is returned as is."""
        if not is_sealed(value):
            return value
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            shown = f"secret param {field!r}" if field else "a secret param"
            raise errors.FailedPrecondition(
                f"{shown} cannot be decrypted with this server's secret_key: every server must "
                "have the same secret_key as the API server that stored it",
                reason="SECRET_KEY_MISMATCH",
            ) from None

    def seal_params(
        self, form: Iterable[Mapping[str, Any]], values: Mapping[str, str]
    ) -> dict[str, str]:
        """``values`` with every non-empty password field sealed (sealed ones kept as they are)."""
        secret = sdk_params.secret_fields(form)
        return {
            k: (self.seal(v) if k in secret and v and not is_sealed(v) else v)
            for k, v in values.items()
        }

    def open_params(self, values: Mapping[str, str]) -> dict[str, str]:
        """``values`` with every sealed value opened, whatever the form says about it now."""
        return {k: self.open(v, k) if isinstance(v, str) else v for k, v in values.items()}


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret key file %s is readable by others (mode %o)", path, mode & 0o777)
    key = path.read_bytes().strip()
    if not key:
        raise ConfigError(f"secret key file {path} is empty")
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; generates it (mode 0600) on first use.

    Safe when several servers sharing ``data_dir`` start at once: the key is written to a
    private temporary file and linked into place only complete, and a server that loses the
    race reads the winner's key.
    """
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key(path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.warning(
        "generated the secret key %s, which encrypts password params at rest: back it up, and "
        "give every server that shares this store the same key (config secret_key)",
        path,
    )
    return _read_key(path)


def open_params(box: SecretBox | None, values: Mapping[str, str]) -> dict[str, str]:
    """Stored instance params as the plugin must get them: sealed values opened.

    ``box`` None (no key configured) passes unsealed values through and refuses sealed ones
    with the same SECRET_KEY_MISMATCH error a wrong key gets.
    """
    if box is not None:
        return box.open_params(values)
    if any(isinstance(v, str) and is_sealed(v) for v in values.values()):
        raise errors.FailedPrecondition(
            "instance params hold encrypted secrets and this server has no secret_key",
            reason="SECRET_KEY_MISMATCH",
        )
    return dict(values)
