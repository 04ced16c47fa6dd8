"""Gate and rate changes as tools and tests make them under four-eyes: one operator
proposes, a second approves. The two identities travel as `Hands`: a stub and the call
metadata for each operator. Today the identity is the `x-mesh-caller` header, so both can
share one channel (`header_hands`); with certificates each operator has a channel of its
own, and only the construction of Hands changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.identity import CALLER_HEADER

S = TypeVar("S")
Metadata = Sequence[tuple[str, str]]

# The operator identities the tools act as (drill, load, benches): two, since nobody
# approves their own change.
TOOL_PROPOSER = "ops-tools-proposer"
TOOL_APPROVER = "ops-tools-approver"


@dataclass(frozen=True)
class Hands(Generic[S]):
    """Two operators' handles on one admin service."""

    proposer: S
    approver: S
    proposer_metadata: Metadata = ()
    approver_metadata: Metadata = ()


def caller_metadata(name: str) -> Metadata:
    return ((CALLER_HEADER, name),)


def header_hands(stub: S, proposer: str = TOOL_PROPOSER, approver: str = TOOL_APPROVER) -> Hands[S]:
    """Both operators on one channel, told apart by the caller header."""
    return Hands(stub, stub, caller_metadata(proposer), caller_metadata(approver))


async def set_gate(hands: Hands[withdraw_pb2_grpc.WithdrawAdminServiceStub],
                   request: withdraw_pb2.SetGateRequest, timeout: float = 10.0) -> withdraw_pb2.GateConfig:
    """What SetGate(request) did before four-eyes: proposed, approved, the config in force."""
    proposed = await hands.proposer.ProposeGateChange(
        withdraw_pb2.ProposeGateChangeRequest(request=request), timeout=timeout,
        metadata=hands.proposer_metadata)
    approved = await hands.approver.ApproveGateChange(
        withdraw_pb2.ApproveGateChangeRequest(change_id=proposed.change.review.change_id), timeout=timeout,
        metadata=hands.approver_metadata)
    return approved.config


async def set_rate(hands: Hands[payout_pb2_grpc.PayoutAdminServiceStub],
                   request: payout_pb2.SetChannelRateRequest, reason: str = "",
                   timeout: float = 10.0) -> payout_pb2.ChannelStats:
    """What SetChannelRate(request) did before four-eyes: proposed, approved, the stats after."""
    proposed = await hands.proposer.ProposeRateChange(
        payout_pb2.ProposeRateChangeRequest(request=request, reason=reason), timeout=timeout,
        metadata=hands.proposer_metadata)
    approved = await hands.approver.ApproveRateChange(
        payout_pb2.ApproveRateChangeRequest(change_id=proposed.change.review.change_id), timeout=timeout,
        metadata=hands.approver_metadata)
    return approved.stats
