"""The one authenticator (arkor/object/auth.py) on its own: one policy for v1, LFS and S3, and
constant-time matching. The HTTP behaviour on real servers is in test_auth_http.py."""

from __future__ import annotations

import base64
import hmac

import pytest

from arkor.config import AccessKey, AuthConfig, ClusterConfig, Config, ConfigError, RunConfig, load_config
from arkor.errors import Unauthorized
from arkor.object.auth import Authenticator, Principal

USERS = [
    AccessKey(name="alice", accessKey="AK1", secretKey="s1-secret", read=["*"], write=["team/*"]),
    AccessKey(name="root", accessKey="AK2", secretKey="s2-secret", read=[], write=["*"], admin=True),
    AccessKey(name="zoë", accessKey="AKé", secretKey="sé-secret", read=["b"], write=[]),
]


def authenticator(prod: bool = False) -> Authenticator:
    return Authenticator(Config(run=RunConfig(runMode="prod" if prod else "dev"),
                                auth=AuthConfig(anonymousLoopback=not prod, users=USERS),
                                cluster=ClusterConfig(secret="x" * 32)))


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_wrong_or_malformed_credentials_are_401_even_on_dev_loopback() -> None:
    dev = authenticator()
    assert dev.authenticate(None, "127.0.0.1").anonymous
    for header in (
        basic("AK1:wrong"), basic("nobody:s1-secret"), basic("AK1"),  # no ':' is no credentials
        basic("s1-secret"), "Basic !!!", "Basic " + "é" * 8, "Bearer wrong", "Bearer é€",
        "Bearer", "Token s1-secret", "Basic " + base64.b64encode(b"AK1:\xff\xfe").decode(),
    ):
        with pytest.raises(Unauthorized) as info:
            dev.authenticate(header, "127.0.0.1")
        assert info.value.status == 401 and info.value.headers["www-authenticate"].startswith("Basic")
        assert info.value.to_json()["error"]["code"] == "unauthorized", header


def test_users_rights_and_non_ascii_credentials() -> None:
    auth = authenticator(prod=True)
    alice = auth.authenticate(basic("AK1:s1-secret"), "10.0.0.1")
    assert alice == Principal("alice", USERS[0])
    assert alice.may("read", "anything") and alice.may("write", "team/app")
    assert not alice.may("write", "other") and not alice.may("admin", "team/app")
    zoe = auth.authenticate(basic("AKé:sé-secret"), "10.0.0.1")
    assert zoe.name == "zoë" and zoe.may("read", "b") and not zoe.may("read", "c")
    root = auth.authenticate("Bearer s2-secret", "10.0.0.1")
    assert root.may("admin", "x/y") and root.may("read", "x")  # write implies read
    assert auth.authenticate("Bearer " + "sé-secret".encode().decode("latin-1"), "::1").name == "zoë"
    with pytest.raises(Unauthorized):
        auth.authenticate(None, "127.0.0.1")  # prod: no anonymous, even on loopback


def test_the_interface_s3_plugs_into() -> None:
    auth, prod = authenticator(), authenticator(prod=True)
    user = auth.user_for_access_key("AK1")
    assert user is USERS[0] and auth.user_for_access_key("AK9") is None
    assert auth.principal_for(user).may("write", "team/x")
    assert auth.anonymous_principal("127.0.0.1") == Principal("anonymous", None)
    assert auth.anonymous_principal("::ffff:127.0.0.1") is not None
    assert auth.anonymous_principal("10.0.0.1") is None
    assert auth.anonymous_principal("localhost-not-an-ip") is None
    assert prod.anonymous_principal("127.0.0.1") is None


def test_an_unknown_key_costs_the_same_as_a_wrong_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both compare one 32-byte digest against the offered secret's digest: the unknown key
    against a dummy, so the time cannot tell which keys exist."""
    auth = authenticator()
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for header in (basic("AK1:wrong-secret"), basic("no-such-key:wrong-secret")):
        with pytest.raises(Unauthorized):
            auth.authenticate(header, "10.0.0.1")
    assert compared == [(32, 32), (32, 32)]


@pytest.mark.parametrize(("users", "key"), [
    ("[{accessKey: a, secretKey: same}, {accessKey: b, secretKey: same}]", "auth.users[1].secretKey"),
    ("[{accessKey: a, secretKey: s1}, {accessKey: a, secretKey: s2}]", "auth.users[1].accessKey"),
])
def test_two_users_may_not_share_a_key(tmp_path: object, users: str, key: str) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "c.yaml"
    path.write_text(f"auth:\n  users: {users}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(key) and "same" not in str(info.value).split(":", 1)[0]
