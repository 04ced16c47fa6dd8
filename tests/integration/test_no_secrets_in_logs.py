"""No token, key, full account number, webhook URL or database password in a log (issue 13,
item 6): one withdrawal through the real services (bind, forced credit, page, confirm,
payout, a refused forged token) and a discrepancy whose webhook post fails, all with known
secrets in play; every log record the services wrote is then searched for them."""

from __future__ import annotations

import logging
import random
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from campaign.tokens import RewardGrant, sign
from mesh.account.v1 import account_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2 as wd
from meshkit import redact
from tests.harness import new_id, new_uid, unlimited_rates, user_metadata
from tests.integration.withdraw_support import _start, free_port, reward_token, start_mesh
from tests.waiting import eventually

DB_PASSWORD = f"pw-{uuid.uuid4().hex}"
HOOK_SECRET = f"hook-{uuid.uuid4().hex}"
HOOK_QUERY = f"sig-{uuid.uuid4().hex}"


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def everything_logged(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter()
    # The message, its arguments and extra fields as stored, and any traceback.
    return "\n".join(f"{formatter.format(r)}\n{r.__dict__!r}" for r in records)


async def test_a_flow_with_known_secrets_logs_none_of_them(
    mesh_env: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {**mesh_env, "DATABASE_URL": with_password(mesh_env["DATABASE_URL"], DB_PASSWORD)}
    hook = f"http://127.0.0.1:{free_port()}/hooks/{HOOK_SECRET}?sig={HOOK_QUERY}"
    m = await start_mesh(env, payout=True, extra={
        "PAYOUT_DEFAULT_RATES": unlimited_rates("bank,alipay,balance"),
        "GATEWAY_SWEEP_INTERVAL_S": "0.1",
    })
    tag = uuid.uuid4().hex[:8]
    recon = await _start("recon_svc", {
        **m.env, "RECON_SVC_DB_SCHEMA": f"recon_sl{tag}", "RECON_WEBHOOK_URL": hook,
        "RECON_WEBHOOK_TIMEOUT_S": "1", "RECON_GRACE_S": "1", "RECON_POLL_MS": "100",
        "RECON_CHECK_MS": "100", "RECON_SELF_CHECK": "true", "RECON_AUDIT_S": "0.5",
        "RECON_DB_POOL_SIZE": "4",
    })
    try:
        uid = new_uid()
        account_number = f"6217{random.randint(10**11, 10**12 - 1)}"
        method = f"m-{uuid.uuid4().hex[:12]}"
        await m.gateway().BindMethod(gateway_pb2.BindMethodRequest(
            uid=uid, channel="bank", account=account_number, method_id=method), timeout=10)
        funding, page_token, confirm_token = (reward_token(uid, 2_000) for _ in range(3))
        session = user_metadata(uid)
        await m.account().ForceCredit(account_pb2.ForceCreditRequest(uid=uid, tokens=[funding]), timeout=10)
        await m.withdraw().GetWithdrawPage(wd.GetWithdrawPageRequest(uid=uid, tokens=[page_token]),
                                           timeout=10, metadata=session)
        order = (await m.confirm(uid, method, 700, tokens=[confirm_token])).order
        # Signed with a key the ledger does not have, under a key id it does.
        forged = sign(RewardGrant(new_id("rw"), uid, 5_000, "red_packet", int(time.time())), "k1", b"f" * 32)
        with pytest.raises(grpc.aio.AioRpcError):
            await m.confirm(uid, method, 700, tokens=[forged])

        async def paid() -> bool:
            got = await m.withdraw().GetOrder(wd.GetOrderRequest(order_id=order.order_id), timeout=10,
                                              metadata=session)
            return got.order.state == wd.ORDER_STATE_SUCCEEDED

        await eventually(paid, timeout=15, interval=0.1, what="the order to be paid")
        # A payout nobody ordered: recon reports it and posts to the (unreachable) webhook.
        ghost = new_id("ghost")
        await m.gateway().Payout(gateway_pb2.PayoutRequest(
            order_id=ghost, uid=uid, channel="bank", method_id=method, amount_fen=300), timeout=10)

        async def reported() -> bool:
            return any("webhook" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)

        await eventually(reported, timeout=20, interval=0.2, what="recon's webhook post to fail")
    finally:
        await recon.stop(1.0)
        await m.stop()

    logged = everything_logged(caplog.records)
    # The flow did log about each of them, in redacted form.
    assert redact.url(hook) in logged
    assert HOOK_SECRET not in redact.url(hook) and HOOK_QUERY not in redact.url(hook)
    secrets = {
        "reward token (funding)": funding, "reward token (page)": page_token,
        "reward token (confirm)": confirm_token, "forged token": forged,
        "account number": account_number, "webhook URL": hook, "webhook path secret": HOOK_SECRET,
        "webhook query secret": HOOK_QUERY, "database password": DB_PASSWORD,
        "database URL": env["DATABASE_URL"],
    }
    for kid, secret in (part.split(":", 1) for part in mesh_env["REWARD_TOKEN_KEYS"].split(",")):
        secrets[f"reward token key {kid}"] = secret
    secrets["session token"] = session[0][1].removeprefix("Bearer ")
    for kid, secret in (part.split(":", 1) for part in mesh_env["SESSION_TOKEN_KEYS"].split(",")):
        secrets[f"session token key {kid}"] = secret
    leaked = [name for name, secret in secrets.items() if secret in logged]
    assert leaked == [], f"found in the logs: {leaked}"
