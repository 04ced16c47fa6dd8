"""The order state machine is defined once (meshkit/order_states.py, wrapped by
withdraw_svc.domain) and enforced by the database trigger (orders_guard). This walks
every (from, to) pair of states against both, on a real PostgreSQL schema migrated as
withdraw_svc migrates it, so the two cannot drift; and checks that exactly the moves
into a state that owes a refund write the order's REFUND job."""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from collections.abc import AsyncIterator

import asyncpg
import pytest

from meshkit.db import create_pool, migrate
from tests.harness import new_uid
from withdraw_svc.domain import TRANSITIONS, OrderState, can_transition, owes_refund
from withdraw_svc.server import MIGRATIONS

CREATED = OrderState.PENDING_DEDUCT


@pytest.fixture
async def pool(mesh_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    schema = f"withdraw_states_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(mesh_env["DATABASE_URL"], schema, min_size=1, max_size=2)
    await migrate(pool, schema, MIGRATIONS)
    yield pool
    await pool.close()


def path_to(target: OrderState) -> list[OrderState]:
    """The shortest walk of the domain's table from creation to `target` (excluded the start)."""
    came_from: dict[OrderState, OrderState | None] = {CREATED: None}
    queue = deque([CREATED])
    while queue:
        state = queue.popleft()
        for nxt in sorted(TRANSITIONS[state]):
            if nxt not in came_from:
                came_from[nxt] = state
                queue.append(nxt)
    assert target in came_from, f"{target} cannot be reached from {CREATED}"
    steps: list[OrderState] = []
    at: OrderState | None = target
    while at is not None and at is not CREATED:
        steps.append(at)
        at = came_from[at]
    return steps[::-1]


async def move(pool: asyncpg.Pool, order_id: str, to: OrderState) -> None:
    """The move as any writer would make it: state (and, into FAILED, a failure reason)."""
    await pool.execute(
        "UPDATE orders SET state = $2, failure_reason = $3, state_reason = 'state machine test' "
        "WHERE order_id = $1",
        order_id, to.value, "DEDUCT_REFUSED" if to is OrderState.FAILED else "",
    )


async def order_in(pool: asyncpg.Pool, state: OrderState) -> str:
    order_id = f"wd-{uuid.uuid4().hex}"
    await pool.execute(
        "INSERT INTO orders (order_id, uid, request_id, amount_fen, channel, method_id, state, state_reason) "
        "VALUES ($1, $2, $3, 100, 'bank', 'm-1', $4, 'created')",
        order_id, new_uid(), uuid.uuid4().hex, CREATED.value,
    )
    for step in path_to(state):
        await move(pool, order_id, step)
    return order_id


async def refund_jobs(pool: asyncpg.Pool, order_id: str) -> int:
    return int(await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'REFUND' AND order_id = $1", order_id))


async def test_the_trigger_allows_exactly_the_domain_transitions(pool: asyncpg.Pool) -> None:
    verdicts: dict[tuple[OrderState, OrderState], tuple[bool, bool]] = {}
    for source, target in itertools.permutations(OrderState, 2):
        order_id = await order_in(pool, source)
        try:
            await move(pool, order_id, target)
            allowed = True
        except asyncpg.CheckViolationError as err:
            # Refused by orders_guard itself, not by a column constraint.
            assert "transition" in str(err) or "terminal" in str(err), err
            allowed = False
        state = await pool.fetchval("SELECT state FROM orders WHERE order_id = $1", order_id)
        assert state == (target if allowed else source).value
        verdicts[(source, target)] = (allowed, can_transition(source, target))
    drift = {pair: v for pair, v in verdicts.items() if v[0] != v[1]}
    assert drift == {}, f"(database, domain) disagree on {drift}"
    # Twenty pairs walked; the six the domain allows are the ones the database allowed.
    assert len(verdicts) == 20
    assert sum(db for db, _ in verdicts.values()) == sum(len(t) for t in TRANSITIONS.values()) == 6


async def test_a_refund_job_is_written_exactly_on_entering_a_state_that_owes_one(pool: asyncpg.Pool) -> None:
    for source, targets in TRANSITIONS.items():
        for target in targets:
            order_id = await order_in(pool, source)
            before = await refund_jobs(pool, order_id)
            await move(pool, order_id, target)
            written = await refund_jobs(pool, order_id) - before
            assert written == (1 if owes_refund(target) else 0), (source, target, written)
