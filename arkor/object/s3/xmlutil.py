"""XML for S3: a safe parser for request bodies and a tiny builder for answers.

Lives here: parsing untrusted XML (no DTDs, no entities, bounded size; S3 namespaces stripped so
callers match plain tag names) and rendering answer documents from nested pairs. Must not live here:
the shape of any particular S3 document (the operations build those) or any I/O.

Builder shape: ``xml_document("ListAllMyBucketsResult", [("Owner", [("ID", "arkor")]),
("Buckets", [("Bucket", [("Name", "b1")]), ("Bucket", [("Name", "b2")])])])``. A child is a
``(tag, value)`` pair; `tag` is a name or ``(name, {attribute: value})``; `value` is a str, an int,
a bool (``true``/``false``), a list or tuple of children (nested element), or None (left out).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import TypeAlias

import defusedxml.ElementTree as SafeET

from arkor.object.s3.errors import S3Error

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"

Tag: TypeAlias = "str | tuple[str, Mapping[str, str]]"
Value: TypeAlias = "str | int | bool | None | list[Child] | tuple[Child, ...]"
Child: TypeAlias = "tuple[Tag, Value]"

# Characters XML 1.0 cannot carry literally are written as character references, as S3 does.
_ESCAPES = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;"}
_ESCAPES.update({c: f"&#x{c:X};" for c in range(0x20) if c not in (0x09, 0x0A)})
_ESCAPES[0x7F] = "&#x7F;"


def escape(text: str) -> str:
    """Text or attribute value, escaped for XML."""
    return text.translate(_ESCAPES)


def _malformed(why: str) -> S3Error:
    return S3Error(
        "MalformedXML",
        f"The XML you provided was not well-formed or did not validate against our published schema ({why})",
        400,
    )


def parse_xml(body: bytes, *, max_bytes: int) -> ET.Element:
    """Parse an untrusted request body; S3Error MalformedXML (400) on anything wrong or too large."""
    if len(body) > max_bytes:
        raise _malformed(f"body over {max_bytes} bytes")
    if not body.strip():
        raise _malformed("empty body")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except Exception as exc:  # ParseError, the defusedxml refusals, encoding errors: all malformed
        raise _malformed(type(exc).__name__) from None
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = element.tag.split("}", 1)[1]
    return root


def child_text(element: ET.Element, tag: str, default: str | None = None) -> str | None:
    """Text of the first direct child named `tag` ("" when empty), else `default`."""
    child = element.find(tag)
    if child is None:
        return default
    return child.text or ""


def _render(out: list[str], children: Iterable[Child]) -> None:
    for tag, value in children:
        if value is None:
            continue
        if isinstance(tag, tuple):
            name, attrs = tag
            open_tag = name + "".join(f' {k}="{escape(v)}"' for k, v in attrs.items())
        else:
            name = open_tag = tag
        if isinstance(value, (list, tuple)):
            out.append(f"<{open_tag}>")
            _render(out, value)
            out.append(f"</{name}>")
        elif isinstance(value, bool):
            out.append(f"<{open_tag}>{'true' if value else 'false'}</{name}>")
        else:
            out.append(f"<{open_tag}>{escape(str(value))}</{name}>")


def xml_document(
    root_tag: str, children: Iterable[Child], *, namespace: str | None = S3_NAMESPACE
) -> bytes:
    """A UTF-8 XML document: `root_tag` (in the S3 namespace unless None) holding `children`."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    out.append(f'<{root_tag} xmlns="{namespace}">' if namespace else f"<{root_tag}>")
    _render(out, children)
    out.append(f"</{root_tag}>")
    return "".join(out).encode("utf-8", errors="xmlcharrefreplace")
