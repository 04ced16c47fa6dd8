"""The withdraw gate as the tools need it: open it for a run (audited) and put it back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from mesh.withdraw.v1 import withdraw_pb2
from tools.loadlib import four_eyes
from tools.loadlib.clients import MeshClients


async def get_config(clients: MeshClients) -> withdraw_pb2.GateConfig:
    reply = await clients.withdraw_admin.GetGate(withdraw_pb2.GetGateRequest(), timeout=5.0,
                                                 metadata=clients.metadata)
    return reply.config


async def set_config(clients: MeshClients, config: withdraw_pb2.GateConfig,
                     reason: str) -> withdraw_pb2.GateConfig:
    """Replace the whole configuration (update_mask "*"): the tools say every field. Four
    eyes: proposed as one tool operator, approved as another."""
    current = await get_config(clients)
    return await four_eyes.set_gate(
        four_eyes.header_hands(clients.withdraw_admin),
        withdraw_pb2.SetGateRequest(config=config, expected_version=current.version, reason=reason,
                                    update_mask=FieldMask(paths=["*"])),
        timeout=5.0)


async def restore(clients: MeshClients, config: withdraw_pb2.GateConfig | None, reason: str,
                  say: Callable[[str], None]) -> None:
    """Put back the configuration a run replaced (None: it replaced nothing). A failure is
    said, not raised: it runs in a `finally`, where raising would hide the run's own error."""
    if config is None:
        return
    try:
        await set_config(clients, config, reason=reason)
    except Exception as exc:
        say(f"could not restore the gate configuration: {exc}")


def open_config(base: withdraw_pb2.GateConfig) -> withdraw_pb2.GateConfig:
    modulus = max(1, base.release_modulus)
    return withdraw_pb2.GateConfig(timezone=base.timezone, closed_start="", closed_end="",
                                   release_modulus=modulus, release_k=modulus, bind_prompt=base.bind_prompt)


async def page_gate(clients: MeshClients, uid: int, timeout_s: float = 3.0) -> withdraw_pb2.Gate | None:
    try:
        reply = await clients.withdraw.GetWithdrawPage(withdraw_pb2.GetWithdrawPageRequest(uid=uid),
                                                       timeout=timeout_s, metadata=clients.user_metadata(uid))
    except grpc.aio.AioRpcError:
        return None
    return reply.gate


async def wait_gate(clients: MeshClients, uids: Sequence[int], want_open: bool,
                    timeout_s: float = 15.0) -> bool:
    """Wait until the withdraw page shows the gate open (or closed) for every uid given:
    replicas pick up gate changes within seconds, not at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        gates = await asyncio.gather(*(page_gate(clients, uid) for uid in uids))
        if all(g is not None and g.open == want_open for g in gates):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.25)
