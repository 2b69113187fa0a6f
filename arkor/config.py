"""One validated configuration for every role.

`conf/runtime.yaml` keeps the seed's sections (run, http, sqldatabase, kvdatabase) exactly as the
seed wrote them and adds one section per role. Every key is declared here as a dataclass field; the
loader walks the YAML against these declarations so that an unknown key or a bad value stops start-up
with one line naming the key (``config error: data.port: expected an integer, got 'x'``).

Sizes accept integers or strings such as ``8MiB``; durations accept numbers (seconds) or strings such
as ``500ms``, ``30s``, ``2m``, ``1h``.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arkor.config_rules import ConfigError, check_role, validate

DEFAULT_CONFIG_PATH = Path("conf/runtime.yaml")


class Size(int):
    """A byte count written as ``8MiB`` or ``1048576`` in YAML."""


class Duration(float):
    """A number of seconds written as ``30s``, ``500ms`` or ``2m`` in YAML."""


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(value: Any) -> int:
    """Parse ``8MiB``, ``1.5GB`` or a bare integer into bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 8MiB, got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(value: Any) -> float:
    """Parse ``30s``, ``500ms``, ``2m`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*", str(value))
    if not match or match.group(2) not in _DURATION_UNITS:
        raise ValueError(f"expected a duration such as 30s, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


# --- the seed's sections -------------------------------------------------------------------------


@dataclass
class RunConfig:
    runMode: str = field(default="dev", metadata={"choices": ("dev", "prod")})
    logPath: str = "log/arkor"
    logLevel: str = field(
        default="info", metadata={"choices": ("debug", "info", "warning", "error")}
    )


@dataclass
class HttpConfig:
    listenMode: str = field(default="http", metadata={"choices": ("http", "https")})
    httpsCertFile: str = ""
    httpsKeyFile: str = ""
    # PEM CA bundle the roles trust when they call each other over https (a private CA or the
    # self-signed httpsCertFile itself); empty: the system's CAs.
    caFile: str = ""
    keepAliveTimeout: Duration = Duration(75.0)
    maxHeaderBytes: Size = Size(16 * 1024)
    # Connections served at once per process (each may buffer about 1.25 MiB of body); past it,
    # new ones wait in the listen backlog (arkor.web.admission).
    maxConnections: int = 2048


@dataclass
class SqlDatabaseConfig:
    driver: str = field(default="sqlite", metadata={"choices": ("sqlite", "mysql")})
    username: str = "root"
    password: str = ""
    protocol: str = field(default="tcp", metadata={"choices": ("tcp",)})
    host: str = "127.0.0.1"
    port: int = 3306
    schema: str = "arkor"
    path: str = ""  # sqlite file; empty means <dataDir>/registry.db
    poolSize: int = 8


@dataclass
class KvDatabaseConfig:
    driver: str = field(default="memory", metadata={"choices": ("memory", "redis")})
    username: str = ""
    password: str = ""
    protocol: str = field(default="tcp", metadata={"choices": ("tcp",)})
    host: str = "127.0.0.1"
    port: int = 6379
    partition: int = 0


# --- cluster-wide ------------------------------------------------------------------------------


@dataclass
class AccessKey:
    """A user of the public API: HTTP Basic (accessKey:secretKey) or bearer token (secretKey)."""

    name: str = ""
    accessKey: str = ""
    secretKey: str = ""
    # Buckets (v1, S3) and Git LFS repositories ("namespace/repo") this user may read / write,
    # shell-style wildcards, "*" for all; write implies read.
    read: list[str] = field(default_factory=lambda: ["*"])
    write: list[str] = field(default_factory=lambda: ["*"])
    # The "admin" right: force-unlock others' LFS locks, list the reserved git-lfs bucket.
    admin: bool = False


@dataclass
class AuthConfig:
    # In dev mode anonymous requests from loopback are allowed; prod needs at least one key.
    anonymousLoopback: bool = True
    users: list[AccessKey] = field(default_factory=list)


@dataclass
class ClusterConfig:
    # Shared by every role; signs internal requests (data-server writes, registry mutations).
    secret: str = ""
    replicas: int = 3


# --- roles -------------------------------------------------------------------------------------


@dataclass
class RegistryConfig:
    host: str = "127.0.0.1"
    port: int = 8126
    dataDir: str = "arkor-data/registry"
    heartbeatTimeout: Duration = Duration(10.0)
    leaseSize: int = 1024
    reaperInterval: Duration = Duration(30.0)
    orphanGrace: Duration = Duration(3600.0)
    # A group stops being writable when any member has less free space than this.
    minFreeBytes: Size = Size(64 * 1024**2)
    # Prefix of every Redis key the registry uses (several clusters or tests can share a Redis).
    kvPrefix: str = "arkor:"


@dataclass
class DataConfig:
    host: str = "127.0.0.1"
    port: int = 8127
    dir: str = "arkor-data/data1"
    group: int = 1
    # How the registry and object servers reach this server; empty means http(s)://host:port.
    advertiseUrl: str = ""
    registry: str = "http://127.0.0.1:8126"
    volumeSize: Size = Size(1024**3)
    heartbeatInterval: Duration = Duration(2.0)
    # Writes are refused (507) when free disk space would drop below this.
    reserveBytes: Size = Size(64 * 1024**2)
    maxNeedleSize: Size = Size(256 * 1024**2)
    bodyTimeout: Duration = Duration(30.0)
    diskThreads: int = 8
    scrubRate: Size = Size(16 * 1024**2)  # bytes per second the scrubber may read
    repairRate: Size = Size(64 * 1024**2)
    # How often a data server compares its needles with its peers (and pauses between scrub cycles).
    repairInterval: Duration = Duration(30.0)
    # Compaction runs by itself: every compactInterval, volumes whose dead bytes (deleted or
    # overwritten needles) exceed compactGarbageRatio of their size are rewritten while serving.
    compactInterval: Duration = Duration(600.0)
    compactGarbageRatio: float = 0.5


@dataclass
class ObjectConfig:
    host: str = "127.0.0.1"
    port: int = 8125
    registry: str = "http://127.0.0.1:8126"
    fragmentSize: Size = Size(8 * 1024**2)
    inFlightFragments: int = 4
    readAhead: int = 2
    bodyTimeout: Duration = Duration(30.0)
    # Calls to data servers (arkor/transfer/timeouts.py): connect, response head, gap between
    # chunks, whole needle transfer; a write abandons a group whose replica lags the first
    # acknowledgement by replicaLagLimit; a read asks another replica after hedgeDelay.
    replicaConnectTimeout: Duration = Duration(2.0)
    replicaFirstByteTimeout: Duration = Duration(5.0)
    replicaIdleTimeout: Duration = Duration(5.0)
    replicaTimeout: Duration = Duration(30.0)
    replicaLagLimit: Duration = Duration(1.0)
    replicaSlowLag: Duration = Duration(0.1)
    hedgeDelay: Duration = Duration(0.15)
    # Calls to the registry, the same four timeouts.
    registryConnectTimeout: Duration = Duration(2.0)
    registryFirstByteTimeout: Duration = Duration(5.0)
    registryIdleTimeout: Duration = Duration(5.0)
    registryTimeout: Duration = Duration(10.0)
    # Concurrent small needle writes to one data server, and concurrent manifest lookups and
    # commits to the registry, travel as one request each (arkor/transfer/coalesce.py).
    coalesce: bool = True
    fragmentRetries: int = 3
    maxObjectSize: Size = Size(5 * 1024**4)
    maxMetadataBytes: Size = Size(8 * 1024)
    workers: int = 1
    # A write waits this long for a writable data group (a group resyncing after a restart)
    # before 503 with Retry-After.
    writableWait: Duration = Duration(10.0)
    # Upload guards (arkor/object/guards.py): buffered upload bytes per process (over it: 503
    # slow_down before the body is read; 0: no limit); a body must average bodyMinRate bytes/s once
    # bodyRateGrace has passed (0: no minimum) and be complete within bodyDeadline (0: none).
    uploadBufferBudget: Size = Size(256 * 1024**2)
    bodyMinRate: Size = Size(1024)
    bodyRateGrace: Duration = Duration(30.0)
    bodyDeadline: Duration = Duration(0.0)
    # A multipart upload idle this long (no part stored) is aborted by the registry's reaper and
    # its parts reclaimed; 0: never.
    multipartExpiry: Duration = Duration(7 * 86400.0)


@dataclass
class S3Config:
    """The S3 REST API listener of every object server (docs/specs/S3.md)."""

    enabled: bool = True
    # `arkor object` binds host:port (empty: object.host, so a server listening on every address
    # serves S3 there too); `arkor allinone` binds allinone.host on this port.
    host: str = ""
    port: int = 8130
    region: str = "us-east-1"
    # Virtual-hosted style: requests for <bucket>.<domain> address that bucket; empty: path style only.
    domain: str = ""


@dataclass
class AllInOneConfig:
    host: str = "127.0.0.1"
    dataDir: str = "arkor-data"
    objectPort: int = 8125
    registryPort: int = 8126
    dataPorts: list[int] = field(default_factory=lambda: [8127, 8128, 8129])


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    sqldatabase: SqlDatabaseConfig = field(default_factory=SqlDatabaseConfig)
    kvdatabase: KvDatabaseConfig = field(default_factory=KvDatabaseConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    data: DataConfig = field(default_factory=DataConfig)
    object: ObjectConfig = field(default_factory=ObjectConfig)
    s3: S3Config = field(default_factory=S3Config)
    allinone: AllInOneConfig = field(default_factory=AllInOneConfig)

    @property
    def is_prod(self) -> bool:
        return self.run.runMode == "prod"

    @property
    def s3_host(self) -> str:
        """Where the S3 listener binds: `s3.host`, or the object server's own host."""
        return self.s3.host or self.object.host


# --- loading -----------------------------------------------------------------------------------


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return _build(typing.cast(type, annotation), value, where)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    try:
        if annotation is Size:
            return Size(parse_size(value))
        if annotation is Duration:
            return Duration(parse_duration(value))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {annotation!r}")  # pragma: no cover


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"{path}: unknown key")
        converted = _convert(value, hints[key], path)
        choices = fields[key].metadata.get("choices")
        if choices and converted not in choices:
            raise ConfigError(f"{path}: must be one of {', '.join(choices)}, got {converted!r}")
        kwargs[key] = converted
    return cls(**kwargs)


def _set_dotted(raw: dict[str, Any], dotted: str, text: str) -> None:
    """Apply ``section.key=value`` from the command line, parsed as YAML scalars."""
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text != "" else ""


def load_config(
    path: str | Path | None = None, overrides: typing.Sequence[str] = ()
) -> Config:
    """Load, override and validate; raises ConfigError naming the key on any problem.

    A missing file at the default path means all defaults (so a fresh checkout runs); an explicitly
    named file must exist.
    """
    raw: Any = {}
    if path is None:
        path = DEFAULT_CONFIG_PATH
        explicit = False
    else:
        explicit = True
    path = Path(path)
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    elif explicit:
        raise ConfigError(f"{path}: no such config file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        _set_dotted(raw, key.strip(), value)
    # The seed writes these sections with a driver; an absent section means embedded defaults.
    config = _build(Config, raw, "")
    validate(config)
    return config


def dump_config(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data (for logs and `arkor config`): sizes and durations
    become plain ints and floats, which YAML and JSON can write."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        return value

    return plain(dataclasses.asdict(config))


__all__ = [
    "AccessKey",
    "AllInOneConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "Duration",
    "ObjectConfig",
    "RegistryConfig",
    "Size",
    "check_role",
    "dump_config",
    "load_config",
    "parse_duration",
    "parse_size",
]
