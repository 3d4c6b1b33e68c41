"""Shared pieces of the security tests: certificates, generic calls, statuses, store checks."""

from __future__ import annotations

import datetime
import io
import ipaddress
import stat
import struct
import textwrap
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import func, select

from event_store import models
from listener.alert.v1 import plugin_host_pb2
from listener.v1 import caller_pb2, event_pb2, event_service_pb2, listener_instance_pb2, plugin_pb2
from tests.support.samples import manifest
from tests.support.servers import Pair

PUBLIC_SERVICES: list[ServiceDescriptor] = [
    plugin_pb2.DESCRIPTOR.services_by_name["PluginService"],
    listener_instance_pb2.DESCRIPTOR.services_by_name["ListenerInstanceService"],
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"],
    caller_pb2.DESCRIPTOR.services_by_name["CallerService"],
]
INTERNAL_SERVICE: ServiceDescriptor = plugin_host_pb2.DESCRIPTOR.services_by_name[
    "PluginHostService"
]


def event_types(*names: str) -> list[event_pb2.EventType.ValueType]:
    return [event_pb2.EventType.Value("EVENT_TYPE_" + name) for name in names]


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def public_methods() -> list[MethodDescriptor]:
    return [m for service in PUBLIC_SERVICES for m in service.methods]


async def call_code(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    request: Any = None,
    metadata: Sequence[tuple[str, str]] | None = None,
) -> tuple[grpc.StatusCode, grpc.aio.AioRpcError | None]:
    """Calls any unary-response method with ``request`` (default: the empty request)."""
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    request = request_cls() if request is None else request
    try:
        if method.client_streaming:
            stream = channel.stream_unary(
                method_path(method),
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            await stream(iter([request]), metadata=metadata, timeout=20)
        else:
            unary = channel.unary_unary(
                method_path(method),
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            await unary(request, metadata=metadata, timeout=20)
    except grpc.aio.AioRpcError as err:
        return err.code(), err
    return grpc.StatusCode.OK, None


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@dataclass
class Details:
    reason: str
    fields: list[str]


def details(err: grpc.aio.AioRpcError) -> Details:
    """The ErrorInfo reason and BadRequest fields of a rich status (which must be there)."""
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, f"no google.rpc.Status on {err.code()} {err.details()}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == err.code().value[0]
    out = Details("", [])
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            out.reason = info.reason
        elif detail.Unpack(bad):
            out.fields = [v.field for v in bad.field_violations]
    return out


async def counts(pair: Pair) -> dict[str, int]:
    async with pair.api.store.reader() as session:
        return {
            table.__tablename__: int(
                await session.scalar(select(func.count()).select_from(table)) or 0
            )
            for table in (
                models.Package,
                models.Plugin,
                models.ListenerInstance,
                models.Delivery,
                models.Event,
            )
        }


async def check_consistent(pair: Pair) -> None:
    """The store's invariants: every instance has its delivery row and its plugin, every plugin
    its package, and no delivery row is orphaned."""
    async with pair.api.store.reader() as session:
        instances = {i.id: i for i in (await session.scalars(select(models.ListenerInstance)))}
        plugins = {p.id: p for p in (await session.scalars(select(models.Plugin)))}
        delivery_ids = set(await session.scalars(select(models.Delivery.instance_id)))
        packages = set(await session.scalars(select(models.Package.sha256)))
    assert delivery_ids == set(instances), (delivery_ids, set(instances))
    for inst in instances.values():
        assert inst.plugin_id in plugins, inst.id
    for plugin in plugins.values():
        assert plugin.sha256 in packages, plugin.id


# -- packages -----------------------------------------------------------------------------


def zip_of(entries: Sequence[tuple[zipfile.ZipInfo | str, bytes | str]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are wanted here
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for info, data in entries:
                zf.writestr(info, data)
    return buf.getvalue()


def plugin_zip(name: str = "evil", *extra: tuple[zipfile.ZipInfo | str, bytes | str]) -> bytes:
    """A valid plugin package plus ``extra`` entries."""
    module = textwrap.dedent(
        """
        from listener_common import ListenerPlugin

        class Plugin(ListenerPlugin):
            pass
        """
    )
    return zip_of(
        [
            ("listener-plugin.toml", manifest(name, f"{name}_mod:Plugin")),
            (f"{name}_mod.py", module),
            *extra,
        ]
    )


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, str]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


def patch_entry(
    data: bytes, name: str, local_at: int, central_at: int, fmt: str, value: int
) -> bytes:
    """``data`` with a field of ``name``'s local header (at ``local_at``) and central directory
    header (at ``central_at``) overwritten: hand-made corrupt or hostile zips."""
    raw = bytearray(data)
    encoded = name.encode()
    for signature, name_len_at, field_at, header_len in (
        (b"PK\x03\x04", 26, local_at, 30),
        (b"PK\x01\x02", 28, central_at, 46),
    ):
        at = raw.find(signature)
        while at != -1:
            (name_len,) = struct.unpack_from("<H", raw, at + name_len_at)
            if raw[at + header_len : at + header_len + name_len] == encoded:
                struct.pack_into(fmt, raw, at + field_at, value)
            at = raw.find(signature, at + 4)
    return bytes(raw)


def lie_about_size(data: bytes, name: str, size: int) -> bytes:
    """``data`` with ``name``'s uncompressed size rewritten to ``size`` in both its headers:
    the classic zip bomb that tells the reader it is small."""
    return patch_entry(data, name, 22, 24, "<I", size)


SECRET_PLUGIN = """
import hashlib, json
from listener_common import ListenerPlugin, params

class SecretListener(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.Input("logFile", title="Log file", required=True),
                params.Password("apiKey", title="API key", required=True)]

    async def open(self, config):
        self.path = config["logFile"]
        self.digest = hashlib.sha256(config["apiKey"].encode()).hexdigest()

    async def on_event(self, event):
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"id": event.id, "key_sha256": self.digest}) + "\\n")
"""


def secret_package() -> bytes:
    return zip_of(
        [
            ("listener-plugin.toml", manifest("secretive", "secret_listener:SecretListener")),
            ("secret_listener.py", SECRET_PLUGIN),
        ]
    )


# -- certificates -------------------------------------------------------------------------


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and an
    unrelated CA, written as PEM files under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca, ca_key = _ca("listener test CA")
    other, _ = _ca("someone else's CA")
    server, server_key = _leaf(
        ca,
        ca_key,
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client, client_key = _leaf(ca, ca_key, "api-server", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "other-ca.pem").write_bytes(other.public_bytes(pem))
    (directory / "server.pem").write_bytes(server.public_bytes(pem))
    (directory / "client.pem").write_bytes(client.public_bytes(pem))
    return Certs(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=_write_key(server_key, directory / "server-key.pem"),
        client_cert=directory / "client.pem",
        client_key=_write_key(client_key, directory / "client-key.pem"),
        other_ca=directory / "other-ca.pem",
    )


def channel_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
