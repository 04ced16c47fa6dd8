#!/usr/bin/env python3
"""The floor under the confirm benchmark: a gRPC server that answers ConfirmWithdraw at once,
with no work at all (no database, no second hop), on the same runtime as withdraw_svc
(grpc.aio on uvloop). Driven by the same client as the real run, it shows what Python gRPC
alone costs per call on this machine.

    .venv/bin/python -m bench.grpc_floor --port 50999

It listens with mutual TLS when MESH_TLS_CA/CERT/KEY are set (as withdraw_svc does under
`make up`), plaintext otherwise: the floor pays the same transport the real hop pays.

bench/confirm_throughput.py starts it as a process of its own (like withdraw_svc), drives it,
and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import grpc
import uvloop
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.settings import TlsSettings
from meshkit.transport import bind

ROOT = Path(__file__).resolve().parent.parent


class EmptyWithdraw(withdraw_pb2_grpc.WithdrawServiceServicer):
    async def ConfirmWithdraw(
        self, request: withdraw_pb2.ConfirmWithdrawRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.ConfirmWithdrawResponse:
        # The request is parsed and an order-shaped answer built, as the real handler does.
        return withdraw_pb2.ConfirmWithdrawResponse(order=withdraw_pb2.Order(
            order_id=request.request_id, uid=request.uid, amount_fen=request.amount_fen,
            method_id=request.method_id))


async def serve(port: int) -> None:
    server = grpc.aio.server()
    withdraw_pb2_grpc.add_WithdrawServiceServicer_to_server(EmptyWithdraw(), server)
    # Health ("" is SERVING from the start), so the bench waits for it as for a service.
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    bind(server, f"127.0.0.1:{port}", TlsSettings.from_env())
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
