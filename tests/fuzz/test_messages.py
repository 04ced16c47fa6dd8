"""The strategies themselves (no services): what the fuzz sends covers every field of every
request, the hostile values it is meant to, and goes on the wire as drawn."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from mesh.account.v1 import account_pb2 as acc
from mesh.recon.v1 import recon_pb2 as rc
from tests.fuzz.messages import INT64, Case, Rpc, all_rpcs, cases, messages, mutated, value

RPCS = all_rpcs()
_QUICK = settings(database=None, max_examples=2000, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _fields() -> list[tuple[str, FieldDescriptor]]:
    seen: dict[str, FieldDescriptor] = {}
    for rpc in RPCS:
        for fd in rpc.method.input_type.fields:
            seen.setdefault(fd.full_name, fd)
    return sorted(seen.items())


@pytest.mark.parametrize(("name", "fd"), _fields(), ids=[name for name, _ in _fields()])
def test_every_request_field_is_set_by_some_generated_request(name: str, fd: FieldDescriptor) -> None:
    def is_set(message: Message) -> bool:
        return len(getattr(message, fd.name)) > 0 if fd.is_repeated else message.HasField(fd.name) \
            if fd.message_type is not None else getattr(message, fd.name) != fd.default_value

    find(messages(fd.containing_type), is_set, settings=_QUICK)


@pytest.mark.parametrize("wanted", [
    pytest.param(lambda v: v == INT64[0], id="int64 minimum"),
    pytest.param(lambda v: v == INT64[1], id="int64 maximum"),
    pytest.param(lambda v: v < 0, id="negative"),
    pytest.param(lambda v: v == 0, id="zero"),
])
def test_int64_fields_get_their_extremes(wanted: Any) -> None:
    find(value(acc.DeductRequest.DESCRIPTOR.fields_by_name["amount_fen"], 0), wanted, settings=_QUICK)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@pytest.mark.parametrize("wanted", [
    pytest.param(lambda s: s == "", id="empty"),
    pytest.param(lambda s: "\x00" in s, id="NUL"),
    pytest.param(lambda s: len(s) > 100_000, id="huge"),
    pytest.param(lambda s: any(ord(c) > 0xFFFF for c in s), id="beyond the BMP"),
])
def test_string_fields_get_hostile_values(wanted: Any) -> None:
    find(value(acc.DeductRequest.DESCRIPTOR.fields_by_name["order_id"], 0), wanted, settings=_QUICK)


def test_enum_fields_get_unknown_numbers() -> None:
    known = {v.number for v in rc.DiscrepancyStatus.DESCRIPTOR.values}
    find(value(rc.ListDiscrepanciesRequest.DESCRIPTOR.fields_by_name["status"], 0),
         lambda v: v not in known, settings=_QUICK)


def test_repeated_fields_get_long_lists() -> None:
    find(value(acc.DeductBatchRequest.DESCRIPTOR.fields_by_name["deducts"], 0),
         lambda v: len(v) > 1000, settings=_QUICK)


def test_a_mutation_keeps_the_rest_of_the_seed() -> None:
    seed = acc.DeductRequest(order_id="o-1", uid=7, amount_fen=100)
    # Some mutation changes one field only: the other two are still the seed's.
    find(mutated(lambda n: acc.DeductRequest(order_id="o-1", uid=7, amount_fen=100)),
         lambda m: m != seed and sum(getattr(m, f) == getattr(seed, f)
                                     for f in ("order_id", "uid", "amount_fen")) == 2,
         settings=_QUICK)


def _drawn(rpc: Rpc) -> st.SearchStrategy[tuple[Rpc, Case]]:
    return st.tuples(st.just(rpc), cases(rpc, lambda n: rpc.request_class()()))


@given(st.sampled_from(RPCS).flatmap(_drawn))
def test_what_is_drawn_goes_on_the_wire_as_drawn(drawn: tuple[Rpc, Case]) -> None:
    rpc, case = drawn
    payload = case.payload()
    assert payload.startswith(case.message.SerializeToString())
    if not case.trailer:
        assert rpc.request_class().FromString(payload) == case.message
