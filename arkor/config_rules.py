"""What a valid configuration is: the rules `load_config` applies to every config, and the
start-up checks that depend on the role. What lives here: checks that raise ConfigError naming the
offending key. What must not: the schema (`arkor.config`), loading or defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arkor.config import Config


class ConfigError(Exception):
    """A configuration problem; the message names the offending key."""


def validate(config: Config) -> None:
    """Rules every role's configuration must follow, whatever runs it."""
    if config.http.listenMode == "https":
        for key in ("httpsCertFile", "httpsKeyFile"):
            path = getattr(config.http, key)
            if not path:
                raise ConfigError(f"http.{key}: required when http.listenMode is https")
            if not Path(path).is_file():
                raise ConfigError(f"http.{key}: no such file {path!r}")
    if config.http.caFile and not Path(config.http.caFile).is_file():
        raise ConfigError(f"http.caFile: no such file {config.http.caFile!r}")
    if config.http.maxConnections < 1:
        raise ConfigError("http.maxConnections: must be at least 1")
    if not 1 <= config.cluster.replicas <= 9:
        raise ConfigError("cluster.replicas: must be between 1 and 9")
    if config.object.fragmentSize < 64 * 1024:
        raise ConfigError("object.fragmentSize: must be at least 64KiB")
    if config.object.fragmentSize > config.data.maxNeedleSize:
        raise ConfigError("object.fragmentSize: must not exceed data.maxNeedleSize")
    for key in ("inFlightFragments", "readAhead", "workers", "fragmentRetries"):
        if getattr(config.object, key) < 1:
            raise ConfigError(f"object.{key}: must be at least 1")
    for kind in ("replica", "registry"):
        for key in (f"{kind}ConnectTimeout", f"{kind}FirstByteTimeout", f"{kind}IdleTimeout",
                    f"{kind}Timeout"):
            if getattr(config.object, key) <= 0:
                raise ConfigError(f"object.{key}: must be above 0")
    if config.data.group < 1:
        raise ConfigError("data.group: must be at least 1")
    if not 0.0 < config.data.compactGarbageRatio <= 1.0:
        raise ConfigError("data.compactGarbageRatio: must be above 0 and at most 1")
    if not 1 <= config.registry.leaseSize <= 1_000_000:
        raise ConfigError("registry.leaseSize: must be between 1 and 1000000")
    if config.data.compactInterval < 1:
        raise ConfigError("data.compactInterval: must be at least 1s")
    if config.data.volumeSize < 1024 * 1024:
        raise ConfigError("data.volumeSize: must be at least 1MiB")
    if not re.fullmatch(r"[a-z0-9-]{1,64}", config.s3.region):
        raise ConfigError("s3.region: must be 1-64 characters of a-z 0-9 -")
    for section in ("registry", "data", "object", "s3"):
        port = getattr(config, section).port
        if not 0 <= port <= 65535:
            raise ConfigError(f"{section}.port: must be between 0 and 65535")
    if config.is_prod:
        if len(config.cluster.secret) < 16:
            raise ConfigError("cluster.secret: runMode prod needs a secret of 16 or more characters")
        if not config.auth.users:
            raise ConfigError("auth.users: runMode prod needs at least one access key")
        if config.auth.anonymousLoopback:
            raise ConfigError("auth.anonymousLoopback: must be false in runMode prod")
    access_keys: dict[str, int] = {}
    secret_keys: dict[str, int] = {}
    for i, user in enumerate(config.auth.users):
        if not user.accessKey or not user.secretKey:
            raise ConfigError(f"auth.users[{i}]: accessKey and secretKey are required")
        if user.accessKey in access_keys:
            raise ConfigError(f"auth.users[{i}].accessKey: {user.accessKey!r} is already the access key "
                              f"of auth.users[{access_keys[user.accessKey]}]")
        if user.secretKey in secret_keys:  # a Bearer secret must name one user; never echo it
            other = secret_keys[user.secretKey]
            raise ConfigError(f"auth.users[{i}].secretKey: the same as auth.users[{other}]'s "
                              "(two users may not share a secret key)")
        access_keys[user.accessKey] = secret_keys[user.secretKey] = i


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


def check_role(config: Config, role: str) -> None:
    """Start-up checks that depend on the role: a role run as its own process signs and verifies
    requests between processes, so it needs the shared secret (allinone makes up a random one)."""
    if role in ("registry", "data", "object") and not config.cluster.secret:
        raise ConfigError(f"cluster.secret: required to run `arkor {role}` as a separate process "
                          "(shared by every role; only `arkor allinone` can do without one)")
    if role == "data" and config.data.host in WILDCARD_HOSTS and not config.data.advertiseUrl:
        # The registry hands this URL to object servers and peers: "0.0.0.0" would reach no one.
        raise ConfigError(f"data.advertiseUrl: required when data.host is {config.data.host!r} (say how "
                          "the registry, object servers and peers reach this server, e.g. "
                          "http://10.0.0.5:8127)")
