"""Resource names and ids (AIP-122): ``plugins/{id}``, ``listenerInstances/{id}``."""

from __future__ import annotations

import uuid

from listener_common.names import NAME_PATTERN, NAME_RULE
from listener_core import errors

PLUGINS = "plugins"
INSTANCES = "listenerInstances"


def shown(value: str, limit: int = 80) -> str:
    """``value`` quoted for an error message, cut short: a client's text is echoed bounded."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def check_id(value: str, field: str) -> str:
    """Plugin and instance ids follow the SDK's one rule for plugin names (a manifest's name
    is the default plugin id), so the error quotes that rule."""
    # fullmatch: "$" would also accept a trailing newline.
    if not NAME_PATTERN.fullmatch(value):
        raise errors.InvalidArgument(
            f"{field} {shown(value)} is not a valid id: {NAME_RULE}",
            field_violations=[(field, f"must match ^{NAME_PATTERN.pattern}$")],
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
