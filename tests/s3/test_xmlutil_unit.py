"""The safe XML parser, the answer builder and the S3 error document."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from arkor.object.s3.errors import S3Error, error_xml
from arkor.object.s3.xmlutil import S3_NAMESPACE, child_text, parse_xml, xml_document

DELETE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>'
    b"<Object><Key>a&amp;b</Key></Object><Object><Key>c</Key><VersionId>v</VersionId></Object></Delete>"
)


def malformed(body: bytes, max_bytes: int = 10_000) -> S3Error:
    with pytest.raises(S3Error) as info:
        parse_xml(body, max_bytes=max_bytes)
    assert (info.value.code, info.value.status) == ("MalformedXML", 400)
    return info.value


def test_parse_strips_the_s3_namespace() -> None:
    root = parse_xml(DELETE, max_bytes=10_000)
    assert root.tag == "Delete" and child_text(root, "Quiet") == "true"
    assert [child_text(o, "Key") for o in root.findall("Object")] == ["a&b", "c"]
    assert child_text(root, "Missing") is None and child_text(root, "Missing", "d") == "d"


def test_hostile_and_broken_documents_are_malformed() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><Delete>&lol2;</Delete>'
    )
    external = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Delete>&x;</Delete>'
    )
    for body in (
        laughs,
        external,
        b'<!DOCTYPE Delete SYSTEM "http://example.com/x.dtd"><Delete/>',
        b"",
        b"   ",
        b"<Delete>",
        b"<Delete></Other>",
        b"not xml at all",
        b"<Delete><Object><Key>\xff\xfe</Key></Object></Delete>",
        b"<a>\x00</a>",
        b"<Delete/><Delete/>",
    ):
        malformed(body)
    assert "bytes" in malformed(DELETE, max_bytes=len(DELETE) - 1).message
    assert parse_xml(DELETE, max_bytes=len(DELETE)).tag == "Delete"


def test_deep_nesting_is_bounded_by_size_not_a_crash() -> None:
    depth = 50_000
    body = b"<a>" * depth + b"</a>" * depth
    root = parse_xml(body, max_bytes=len(body))
    assert root.tag == "a"
    malformed(body, max_bytes=len(body) - 1)


def test_builder_escapes_and_round_trips() -> None:
    key = 'a<b>&"c\'\tnew\nline\r'
    xsi = {"xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance", "xsi:type": "CanonicalUser"}
    doc = xml_document(
        "ListBucketResult",
        [
            ("Name", "bkt"),
            ("IsTruncated", False),
            ("MaxKeys", 1000),
            ("Marker", None),
            ("Contents", [("Key", key), ("Size", 5)]),
            ("Contents", (("Key", "é/ü"),)),
            (("Grantee", xsi), [("ID", "x")]),
        ],
    )
    assert doc.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="')
    root = ET.fromstring(doc)
    ns = {"s3": S3_NAMESPACE}
    assert root.find("s3:IsTruncated", ns).text == "false"
    assert root.find("s3:Marker", ns) is None
    keys = [c.find("s3:Key", ns).text for c in root.findall("s3:Contents", ns)]
    assert keys == [key, "é/ü"]
    grantee = root.find("s3:Grantee", ns)
    assert grantee.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "CanonicalUser"
    # what we build, we parse back (namespace stripped)
    assert child_text(parse_xml(doc, max_bytes=len(doc)), "Name") == "bkt"


def test_control_characters_become_character_references() -> None:
    doc = xml_document("R", [("Key", "a\x01b\x7f")])
    assert b"<Key>a&#x1;b&#x7F;</Key>" in doc


def test_error_document() -> None:
    err = S3Error("NoSuchKey", "The specified key does not exist.", 404, headers={"x-a": "1"})
    body = error_xml(err, resource="/bkt/a&b", request_id="4442587FB7D0A2F9")
    root = ET.fromstring(body)
    assert root.tag == "Error"  # S3 error documents carry no namespace
    assert [(c.tag, c.text) for c in root] == [
        ("Code", "NoSuchKey"),
        ("Message", "The specified key does not exist."),
        ("Resource", "/bkt/a&b"),
        ("RequestId", "4442587FB7D0A2F9"),
    ]
    assert err.status == 404 and err.headers == {"x-a": "1"}
    own = S3Error("NoSuchUpload", "gone", 404, resource="/b/k?uploadId=1")
    assert b"<Resource>/b/k?uploadId=1</Resource>" in error_xml(own, resource="/b/k", request_id="r")


def test_random_bytes_and_mutations_only_raise_malformed_xml() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        body = bytearray(DELETE)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(body))
            body[pos : pos + 1] = bytes([rng.randrange(256)]) * rng.randint(0, 3)
        try:
            parse_xml(bytes(body), max_bytes=10_000)
        except S3Error as exc:
            assert (exc.code, exc.status) == ("MalformedXML", 400)
    for _ in range(300):
        try:
            parse_xml(rng.randbytes(rng.randint(1, 300)), max_bytes=10_000)
        except S3Error as exc:
            assert exc.code == "MalformedXML"
