"""Resource names and ids (AIP-122): ``plugins/{id}``, ``listenerInstances/{id}``."""

from __future__ import annotations

import re
import uuid

from listener_core import errors

ID_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
PLUGINS = "plugins"
INSTANCES = "listenerInstances"


def shown(value: str, limit: int = 80) -> str:
    """``value`` quoted for an error message, cut short: a client's text is echoed bounded."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def check_id(value: str, field: str) -> str:
    # fullmatch: "$" would also accept a trailing newline.
    if not ID_PATTERN.fullmatch(value):
        raise errors.InvalidArgument(
            f"{field} {shown(value)} is not a valid id: 1-63 characters of a-z, 0-9 and '-', "
            "starting with a letter and not ending with '-'",
            field_violations=[(field, "must match ^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")],
        )
    return value


def parse(name: str, collection: str, field: str = "name") -> str:
    prefix = collection + "/"
    if not name.startswith(prefix):
        raise errors.InvalidArgument(
            f"{field} {shown(name)} must look like {prefix}{{id}}",
            field_violations=[(field, f"must look like {prefix}{{id}}")],
        )
    return check_id(name[len(prefix) :], field)


def plugin_name(plugin_id: str) -> str:
    return f"{PLUGINS}/{plugin_id}"


def instance_name(instance_id: str) -> str:
    return f"{INSTANCES}/{instance_id}"


def new_instance_id() -> str:
    return "li-" + uuid.uuid4().hex[:16]
