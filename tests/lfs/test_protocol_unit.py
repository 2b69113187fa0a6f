"""The LFS protocol logic on its own: request validation, access rules, tokens, naming."""

from __future__ import annotations

import base64
import re

import pytest

from arkor.config import AccessKey, AuthConfig, ClusterConfig, Config, RunConfig
from arkor.errors import ArkorError, Forbidden, RangeNotSatisfiable, Unauthorized
from arkor.model import LfsLock
from arkor.object.auth import Authenticator
from arkor.object.lfs import auth, protocol
from arkor.object.lfs.storage import LFS_PREFIX, repo_from_params

OID = "a" * 64


def test_batch_validation() -> None:
    ok = protocol.parse_batch({
        "operation": "upload", "transfers": ["lfs-standalone-file", "basic"],
        "ref": {"name": "refs/heads/main"}, "objects": [{"oid": OID, "size": 3}],
    })
    assert ok.operation == "upload" and ok.ref == "refs/heads/main"
    assert ok.objects == [protocol.BatchObject(OID, 3)]
    for bad, status in (
        ({"operation": "delete", "objects": []}, 422),
        ({"operation": "upload", "objects": [{"oid": "A" * 64, "size": 1}]}, 422),
        ({"operation": "upload", "objects": [{"oid": OID[:-1], "size": 1}]}, 422),
        ({"operation": "upload", "objects": [{"oid": OID, "size": -1}]}, 422),
        ({"operation": "upload", "objects": [{"oid": OID, "size": True}]}, 422),
        ({"operation": "upload", "objects": [{"oid": OID, "size": "1"}]}, 422),
        ({"operation": "upload", "transfers": ["tus"], "objects": []}, 422),
        ({"operation": "upload", "hash_algo": "sha512", "objects": []}, 409),
        ({"operation": "upload", "objects": [{"oid": OID, "size": 1}] * 1001}, 413),
        ([], 400),
    ):
        with pytest.raises(ArkorError) as info:
            protocol.parse_batch(bad)
        assert info.value.status == status, bad


def test_content_type_accepts_charset() -> None:
    protocol.check_content_type("application/vnd.git-lfs+json; charset=utf-8")
    protocol.check_content_type("application/vnd.git-lfs+json")
    protocol.check_content_type(None)
    with pytest.raises(ArkorError) as info:
        protocol.check_content_type("text/plain")
    assert info.value.status == 415


def test_range() -> None:
    assert protocol.parse_range(None, 10) is None
    assert protocol.parse_range("bytes=2-5", 10) == (2, 5)
    assert protocol.parse_range("bytes=2-", 10) == (2, 9)
    assert protocol.parse_range("bytes=-3", 10) == (7, 9)
    assert protocol.parse_range("bytes=5-100", 10) == (5, 9)
    assert protocol.parse_range("bytes=0-1,4-5", 10) is None
    with pytest.raises(RangeNotSatisfiable) as info:
        protocol.parse_range("bytes=10-", 10)
    assert info.value.headers["content-range"] == "bytes */10"


def test_lock_requests() -> None:
    assert protocol.parse_lock_create({"path": "a/b.bin", "ref": {"name": "refs/heads/x"}}) == (
        "a/b.bin", "refs/heads/x")
    with pytest.raises(ArkorError):
        protocol.parse_lock_create({"path": ""})
    assert protocol.parse_unlock(None) == (False, None)
    assert protocol.parse_unlock({"force": True}) == (True, None)
    q = protocol.parse_lock_list({"path": "x", "id": "", "limit": "5000", "refspec": "refs/heads/m"})
    assert (q.path, q.lock_id, q.limit, q.ref) == ("x", None, protocol.MAX_LOCK_LIMIT, "refs/heads/m")
    with pytest.raises(ArkorError):
        protocol.parse_lock_list({"limit": "0"})
    lock = LfsLock(id="7", repo="n/r", path="p", owner="alice", locked_at=0.0)
    assert protocol.lock_json(lock) == {
        "id": "7", "path": "p", "locked_at": "1970-01-01T00:00:00Z", "owner": {"name": "alice"}}
    ours, theirs = protocol.split_locks([lock, LfsLock("8", "n/r", "q", "bob", 0.0)], "alice")
    assert [x["id"] for x in ours] == ["7"] and [x["id"] for x in theirs] == ["8"]


def _config(prod: bool) -> Config:
    users = [
        AccessKey(name="alice", accessKey="AK1", secretKey="s1", read=["*"], write=["team/*"]),
        AccessKey(name="carol", accessKey="AK2", secretKey="s2", read=["team/app"], write=[]),
    ]
    return Config(
        run=RunConfig(runMode="prod" if prod else "dev"),
        auth=AuthConfig(anonymousLoopback=not prod, users=users),
        cluster=ClusterConfig(secret="x" * 32),
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_lfs_uses_the_one_authenticator_with_its_own_challenge() -> None:
    dev, prod = Authenticator(_config(False)), Authenticator(_config(True))
    assert auth.authenticate(dev, None, "127.0.0.1").anonymous
    assert auth.authenticate(dev, None, "::1").anonymous
    for authenticator, header, host in (
        (dev, None, "10.0.0.5"),  # not loopback
        (prod, None, "127.0.0.1"),  # prod: always credentials
        (dev, _basic("AK1", "wrong"), "127.0.0.1"),  # wrong credentials are never anonymous
        (prod, "Basic !!!", "127.0.0.1"),
    ):
        with pytest.raises(Unauthorized) as info:
            auth.authenticate(authenticator, header, host)
        assert info.value.headers["lfs-authenticate"].startswith("Basic realm=")
        assert "www-authenticate" not in info.value.headers
    alice = auth.authenticate(prod, _basic("AK1", "s1"), "10.0.0.5")
    assert alice.name == "alice"
    assert auth.authenticate(prod, "Bearer s2", "10.0.0.5").name == "carol"
    auth.authorize(alice, "team/app", write=True)
    auth.authorize(alice, "other/x", write=False)
    with pytest.raises(Forbidden):
        auth.authorize(alice, "other/x", write=True)
    carol = auth.authenticate(prod, _basic("AK2", "s2"), "127.0.0.1")
    auth.authorize(carol, "team/app", write=False)
    with pytest.raises(Forbidden):
        auth.authorize(carol, "team/app", write=True)
    with pytest.raises(Forbidden):
        auth.authorize(carol, "team/other", write=False)


def test_transfer_tokens_bind_method_repo_oid_and_time() -> None:
    config = _config(True)
    token = auth.make_token(config, "PUT", "team/app", OID, now=1000.0)
    assert auth.check_token(config, "PUT", "team/app", OID, token, now=1001.0)
    assert not auth.check_token(config, "GET", "team/app", OID, token, now=1001.0)
    assert not auth.check_token(config, "PUT", "team/ap2", OID, token, now=1001.0)
    assert not auth.check_token(config, "PUT", "team/app", "b" * 64, token, now=1001.0)
    assert not auth.check_token(config, "PUT", "team/app", OID, token, now=1000.0 + auth.TOKEN_VALIDITY + 1)
    other = Config(run=config.run, auth=config.auth, cluster=ClusterConfig(secret="y" * 32))
    assert not auth.check_token(other, "PUT", "team/app", OID, token, now=1001.0)
    assert not auth.check_token(config, "PUT", "team/app", OID, None)
    expires, mac = token.split(":")
    for bad in (f"{expires}:{mac[:-1]}é", "¹²³⁴:" + mac, "١٢٣٤:" + mac, f"{expires}", f"{expires}:",
                "9" * 5000 + ":" + mac):
        assert not auth.check_token(config, "PUT", "team/app", OID, bad, now=1001.0), bad
    # A token is no internal signature and an internal signature no token (own domain tags).
    from arkor.security import Verifier, digest_of
    with pytest.raises(Forbidden):
        Verifier(b"x" * 32).check("PUT", "/team/app.git/info/lfs/objects/" + OID, "",
                                  f"{expires}:n:{mac}", digest_of(b""), now=1001.0)


def test_repo_naming_is_injective_and_routes_match() -> None:
    a = repo_from_params("ns", "repo")
    assert a.object_key(OID) == f"ns/repo/{OID}"
    assert repo_from_params("ns", "repo").full_name == "ns/repo"
    assert repo_from_params("ns.repo", "x").object_key(OID) != repo_from_params(
        "ns", "repo.x").object_key(OID)
    for bad in (("v1", "x"), ("ns", "x.git"), ("ns", ".hidden"), ("n s", "x")):
        with pytest.raises(ArkorError):
            repo_from_params(*bad)
    pattern = re.compile(LFS_PREFIX + r"(?P<rest>/.*)?")
    for path, repo in (("/ns/app.git/info/lfs/objects/batch", "app"),
                       ("/ns/app/info/lfs/locks", "app")):
        match = pattern.fullmatch(path)
        assert match and match["ns"] == "ns" and match["repo"] == repo
    assert pattern.fullmatch("/v1/bucket/info/lfs/objects/batch") is None
