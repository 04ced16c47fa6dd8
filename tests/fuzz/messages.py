"""Hypothesis strategies for hostile requests, derived from the generated descriptors.

Every RPC of every service under gen/mesh is found by walking the generated modules, so a
new RPC is fuzzed without anyone writing a strategy for it. A request is drawn two ways:

- generated: every field of the request type (recursively) set or left unset, each value
  drawn from its type: strings (empty, unicode, control characters, huge), integers of the
  field's width (negative, 0, extremes), doubles (NaN, infinities), enums (known and unknown
  numbers), repeated fields (empty, a few, thousands), nested messages;
- mutated: a known-good request of that RPC (a seed, given by the test module) with one
  field, at any depth, replaced by such a value.

Either may carry a trailer after the serialized message (an unknown field, or bytes that
do not parse) and metadata (caller names, trace context, headers nobody reads). Values the
mesh knows (the fuzz user's uid, its method, real order ids) are mixed in through a
Context the test fills in, so generated requests also get past the first "not found" and
reach the use cases.

Pure: no grpc, no I/O.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.descriptor_pb2 import MethodOptions
from google.protobuf.message import Message
from hypothesis import strategies as st

import mesh

INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)
INT32 = (-(2**31), 2**31 - 1)
UINT32 = (0, 2**32 - 1)
_RANGES = {
    FieldDescriptor.TYPE_INT64: INT64, FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64, FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64, FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32, FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_UINT32: UINT32, FieldDescriptor.TYPE_FIXED32: UINT32,
}
_INT_EDGES = (0, 1, -1, 2, 10, 99, 100, 101, 500, 501, 1000, 1001, 3600, 86_400, 2_000_000, 2_000_001,
              10**8, 10**8 + 1, 10**9, 10**12, 2**31 - 1, -(2**31), 2**31, 2**32 - 1, 2**32,
              2**53, 2**53 + 1, 2**62, 2**63 - 1, -(2**63), 2**63, 2**64 - 1)
_DOUBLE_EDGES = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 5e-324, 1e308, -1e308, float("inf"), float("-inf"),
                 float("nan"), 2.0**63, 1e15)
_STRING_EDGES = (
    "", " ", "\x00", "a\x00b", "\t", "\n", "\r\n", "\x7f", "\x85", "\u200b", "\u202e", "\ufeff",
    "é", "汉字", "😀", "١٢٣", "²", "-1", "0", "+1", " 1", "1 ", "1.5", "1e3", "9" * 40,
    "9223372036854775807", "9223372036854775808", "-9223372036854775809", "NaN", "inf",
    "%%%", "%s%n", "{}", "*", "..", "../../etc/passwd", "'; DROP TABLE orders; --", "a:b", ":",
    "1:1", "0-0", "1-1", "99999999999999999999999-0", "zz", "A" * 64, "A" * 65, "A" * 128, "A" * 129,
    "2026-12-01", "9999-12-31", "0000-00-00", "2026-02-30", "24:00", "23:59", "00:00", "25:61",
    "Asia/Shanghai", "UTC", "Nowhere/Land", "bank", "alipay", "balance", "BANK", "bank\x00",
)
# Long values are built by repetition: cheap to draw, and what size limits must catch.
_LONG_UNITS = ("a", "é", "😀", "\x00", "9", "A:")
_LONG_LENGTHS = (65, 129, 257, 513, 1001, 5000, 70_000, 1_100_000)
_LONG_LISTS = (101, 257, 1001, 5000)
MAX_DEPTH = 3


@dataclass
class Context:
    """Values of the running mesh the strategies mix in (filled in by the test's fixture;
    drawn by index at draw time, so the strategies can be built before the mesh runs)."""

    strings: list[str] = field(default_factory=lambda: ["bank"])
    ints: list[int] = field(default_factory=lambda: [1])


CONTEXT = Context()


def _from_context(kind: str) -> st.SearchStrategy[Any]:
    return st.integers(min_value=0, max_value=2**16).map(
        lambda i: (pool := getattr(CONTEXT, kind))[i % len(pool)])


def _tweak(text: str, how: int, at: int, char: str) -> str:
    """A known value gone slightly wrong: the kind of input that passes a shape check."""
    i = at % (len(text) + 1)
    return [
        text[:i],                                   # truncated
        text[:i] + char + text[i:],                 # one character more
        text[:i] + char + text[i + 1:],             # one character changed
        text + text,                                # doubled
        text.upper(),
        f" {text}",
        text[:i] + "." + text[i:],                  # a token's parts shifted
    ][how % 7]


def _tweaked_context() -> st.SearchStrategy[str]:
    return st.builds(_tweak, _from_context("strings"), st.integers(0, 6), st.integers(0, 2**16),
                     st.sampled_from(["a", "0", "-", "_", ".", "=", "\x00", "é", "😀", " "]))


@functools.cache
def _field_names() -> list[str]:
    """Every field name of every message: what a field mask may name, rightly or not."""
    names: set[str] = set()
    for info in pkgutil.walk_packages(mesh.__path__, prefix="mesh."):
        if info.name.endswith("_pb2"):
            for desc in importlib.import_module(info.name).DESCRIPTOR.message_types_by_name.values():
                names.update(fd.name for fd in desc.fields)
    return sorted(names)


# --- the descriptors ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    service: ServiceDescriptor
    method: MethodDescriptor

    @property
    def name(self) -> str:
        """"mesh.account.v1.AccountService/Deduct"."""
        return f"{self.service.full_name}/{self.method.name}"

    @property
    def path(self) -> str:
        return f"/{self.name}"

    @property
    def read_only(self) -> bool:
        """Declared NO_SIDE_EFFECTS: even an accepted call must change nothing."""
        return self.method.GetOptions().idempotency_level == MethodOptions.NO_SIDE_EFFECTS

    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)


def all_rpcs() -> list[Rpc]:
    """Every RPC of every service in the generated code, in a stable order."""
    found: dict[str, Rpc] = {}
    for info in pkgutil.walk_packages(mesh.__path__, prefix="mesh."):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpc = Rpc(service, method)
                found[rpc.name] = rpc
    return [found[name] for name in sorted(found)]


# --- values of one field -----------------------------------------------------------------


def strings(*, huge: bool = True) -> st.SearchStrategy[str]:
    parts = [
        st.sampled_from(_STRING_EDGES),
        st.text(max_size=40),
        st.text(st.characters(codec="ascii"), max_size=40),
        _from_context("strings"),
        _tweaked_context(),
        st.sampled_from(_field_names()),
    ]
    if huge:
        parts.append(st.builds(lambda unit, n: (unit * n)[:n], st.sampled_from(_LONG_UNITS),
                               st.sampled_from(_LONG_LENGTHS)))
    return st.one_of(*parts)


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in _INT_EDGES if low <= v <= high]
    return st.one_of(
        st.sampled_from(edges),
        st.integers(min_value=low, max_value=high),
        st.integers(min_value=-1000, max_value=1000).filter(lambda v: low <= v <= high),
        _from_context("ints").filter(lambda v: low <= v <= high),
    )


def scalar(fd: FieldDescriptor, *, huge: bool = True) -> st.SearchStrategy[Any]:
    """A value of a non-message field (one element of it when repeated)."""
    t = fd.type
    if t in _RANGES:
        return integers(*_RANGES[t])
    if t == FieldDescriptor.TYPE_STRING:
        return strings(huge=huge)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), strings(huge=huge).map(lambda s: s.encode()))
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        wide = st.floats(width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)
        return st.one_of(st.sampled_from(_DOUBLE_EDGES), wide)
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in fd.enum_type.values]
        # Proto3 enums are open: an unknown number parses, and must be refused by the service.
        return st.one_of(st.sampled_from(known), st.sampled_from([-1, 99, 2**31 - 1, -(2**31)]),
                         st.integers(*INT32))
    raise AssertionError(f"no strategy for field type {t} of {fd.full_name}")


def value(fd: FieldDescriptor, depth: int, *, huge: bool = True) -> st.SearchStrategy[Any]:
    """The value of field `fd` as a whole: a list when repeated, a message when nested."""
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key, val = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
        return st.dictionaries(value(key, depth + 1, huge=False), value(val, depth + 1, huge=False),
                               max_size=4)
    one: st.SearchStrategy[Any]
    if fd.message_type is not None:
        one = messages(fd.message_type, depth + 1, huge=huge and not fd.is_repeated)
    else:
        one = scalar(fd, huge=huge and not fd.is_repeated)
    if not fd.is_repeated:
        return one
    small = (messages(fd.message_type, depth + 1, huge=False) if fd.message_type is not None
             else scalar(fd, huge=False))
    return st.one_of(
        st.lists(one, max_size=4),
        st.builds(lambda item, n: [item] * n, small, st.sampled_from(_LONG_LISTS)),
    )


def messages(desc: Descriptor, depth: int = 0, *, huge: bool = True) -> st.SearchStrategy[Message]:
    """A message of type `desc` with any subset of its fields set to drawn values."""
    cls = message_factory.GetMessageClass(desc)
    if depth >= MAX_DEPTH:
        return st.just(cls())
    # Built lazily: message types may refer to each other.
    return st.deferred(lambda: st.fixed_dictionaries(
        {}, optional={fd.name: value(fd, depth, huge=huge) for fd in desc.fields},
    ).map(lambda values: build(cls, values)))


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, v in values.items():
        assign(message, message.DESCRIPTOR.fields_by_name[name], v)
    return message


def assign(message: Message, fd: FieldDescriptor, v: Any) -> None:
    """Set field `fd` of `message` to `v` (a list, dict, message or scalar), replacing it."""
    target = getattr(message, fd.name)
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        target.clear()
        entry = fd.message_type.fields_by_name["value"]
        for k, item in v.items():
            if entry.message_type is not None:
                target[k].CopyFrom(item)
            else:
                target[k] = item
    elif fd.is_repeated:
        del target[:]
        target.extend(v)
    elif fd.message_type is not None:
        target.CopyFrom(v)
    else:
        setattr(message, fd.name, v)


# --- mutations of a known-good request ---------------------------------------------------

Seed = Callable[[int], Message]


def _leaves(message: Message, depth: int = 0) -> list[tuple[Message, FieldDescriptor]]:
    """Every (holder, field) whose value a mutation may replace: all fields of the message,
    and those of its set sub-messages and of the first element of repeated messages."""
    found: list[tuple[Message, FieldDescriptor]] = []
    for fd in message.DESCRIPTOR.fields:
        found.append((message, fd))
        if depth + 1 >= MAX_DEPTH or fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue
        if fd.is_repeated:
            items = getattr(message, fd.name)
            if len(items):
                found.extend(_leaves(items[0], depth + 1))
        elif message.HasField(fd.name):
            found.extend(_leaves(getattr(message, fd.name), depth + 1))
    return found


@st.composite
def mutated(draw: st.DrawFn, seed: Seed) -> Message:
    """The seed request with one field (at any depth) replaced by a drawn value or cleared;
    sometimes a second and a third one too, sometimes none (the trailer and the metadata
    are then all that is hostile)."""
    message = seed(draw(st.integers(min_value=0, max_value=2**20)))
    times = (0, 1, 1, 1, 1, 1, 1, 1, 2, 3)[draw(st.integers(min_value=0, max_value=9))]
    for _ in range(times):
        leaves = _leaves(message)
        if not leaves:  # a request without fields: only its trailer varies
            return message
        holder, fd = leaves[draw(st.integers(min_value=0, max_value=len(leaves) - 1))]
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            holder.ClearField(fd.name)
        else:
            assign(holder, fd, draw(value(fd, 1)))
    return message


# --- what goes on the wire ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    message: Message
    # Bytes after the serialized message: an unknown field, or garbage.
    trailer: bytes = b""
    # Metadata sent along: a caller name, trace context or headers of nobody's.
    metadata: tuple[tuple[str, str | bytes], ...] = ()

    def payload(self) -> bytes:
        return self.message.SerializeToString() + self.trailer

    def __repr__(self) -> str:
        text = repr(self.message)
        shown = text if len(text) <= 600 else f"{text[:600]}... ({len(text)} characters)"
        return (f"Case({type(self.message).__name__} {shown!s}, trailer={self.trailer[:40]!r}, "
                f"metadata={str(self.metadata)[:300]})")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


_GARBAGE = [b"\x0a\x02\xff\xfe", b"\x0a\x05ab", b"\x08", b"\x0f", b"\x12\xff\xff\xff\xff\x0f"]


@st.composite
def trailers(draw: st.DrawFn) -> bytes:
    """Mostly nothing; else an unknown field (ignored by the parser: the message stands),
    or bytes that do not parse (a truncated field, a wrong wire type, bad UTF-8)."""
    kind = draw(st.integers(min_value=0, max_value=9))
    if kind < 6:
        return b""
    number = draw(st.integers(1000, 2**29 - 1))
    if kind == 6:
        return _varint(number << 3) + _varint(draw(st.integers(*UINT64)))
    if kind == 7:
        raw = draw(st.binary(max_size=32))
        return _varint(number << 3 | 2) + _varint(len(raw)) + raw
    return draw(st.one_of(st.sampled_from(_GARBAGE), st.binary(min_size=1, max_size=16)))


# gRPC itself refuses other characters in a text header (and names starting "grpc-").
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
_HEADER_VALUES = st.one_of(
    _HEADER_TEXT,
    st.sampled_from(["", " ", "anonymous", "withdraw_svc", "payout_svc", "recon_svc", "ops-alice",
                     "00-00000000000000000000000000000000-0000000000000000-00",
                     "00-" + "f" * 32 + "-" + "f" * 16 + "-ff", "ff-zz", "0" * 55]),
    st.builds(lambda unit, n: unit * n, st.sampled_from(["a", "-", "%"]), st.sampled_from([300, 4000])),
)
_HEADER_NAMES = st.one_of(
    st.sampled_from(["x-mesh-caller", "x-mesh-role", "traceparent", "tracestate", "baggage",
                     "authorization", "retry-after-ms", "user-agent", "x-forwarded-for"]),
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_."), min_size=1, max_size=20).filter(
        lambda name: not name.startswith("grpc-") and not name.endswith("-bin")),
)


@st.composite
def metadata(draw: st.DrawFn) -> tuple[tuple[str, str | bytes], ...]:
    """Mostly none; else a few headers, text or binary ("-bin"), known names or not."""
    if draw(st.integers(min_value=0, max_value=3)) > 0:
        return ()
    headers: list[tuple[str, str | bytes]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if draw(st.booleans()):
            headers.append((draw(_HEADER_NAMES), draw(_HEADER_VALUES)))
        else:
            headers.append((draw(_HEADER_NAMES) + "-bin", draw(st.binary(max_size=64))))
    return tuple(headers)


def cases(rpc: Rpc, seed: Seed) -> st.SearchStrategy[Case]:
    """What the fuzz sends to `rpc`: generated and mutated requests, some with a trailer,
    some with hostile metadata."""
    requests = st.one_of(messages(rpc.method.input_type), mutated(seed))
    return st.builds(Case, requests, trailers(), metadata())
