"""Where the client finds its endpoint and credentials: arguments, then environment, then a file.

Precedence (first wins): explicit arguments, ``ARKOR_ENDPOINT`` / ``ARKOR_ACCESS_KEY`` /
``ARKOR_SECRET_KEY``, then ``~/.config/arkor/client.yaml`` (or ``$ARKOR_CLIENT_CONFIG``) with keys
``endpoint``, ``accessKey``, ``secretKey``. Scripts, the CLI and CI can each use the layer they have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_ENDPOINT = "http://127.0.0.1:8125"
CONFIG_ENV = "ARKOR_CLIENT_CONFIG"
_FILE_KEYS = {"endpoint", "accessKey", "secretKey"}


class ClientConfigError(ValueError):
    """The client configuration file is unreadable or has unknown keys."""


@dataclass(frozen=True)
class ClientSettings:
    endpoint: str = DEFAULT_ENDPOINT
    access_key: str | None = None
    secret_key: str | None = None


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "arkor" / "client.yaml"


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ClientConfigError(f"{path}: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ClientConfigError(f"{path}: the top level must be a mapping")
    unknown = set(raw) - _FILE_KEYS
    if unknown:
        raise ClientConfigError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    return {k: str(v) for k, v in raw.items() if v is not None}


def resolve(
    endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    *,
    environ: dict[str, str] | None = None,
    path: Path | None = None,
) -> ClientSettings:
    """Merge the three layers into one `ClientSettings`."""
    env = os.environ if environ is None else environ
    file = _read_file(path if path is not None else config_path())
    endpoint = endpoint or env.get("ARKOR_ENDPOINT") or file.get("endpoint") or DEFAULT_ENDPOINT
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return ClientSettings(
        endpoint=endpoint.rstrip("/"),
        access_key=access_key or env.get("ARKOR_ACCESS_KEY") or file.get("accessKey") or None,
        secret_key=secret_key or env.get("ARKOR_SECRET_KEY") or file.get("secretKey") or None,
    )
