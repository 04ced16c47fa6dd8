"""The cost table adds up the mesh (services, PostgreSQL, Redis) and keeps the load
generator and other work on the machine out of the total; the drain's self-check count
comes from account_svc's metrics page."""

from __future__ import annotations

import pytest

from bench.cost_per_order import (
    calls_table,
    cost_rows,
    counter_total,
    format_table,
    metrics_url,
    server_calls,
    total_of,
)
from tools.loadlib.meshprocs import PG_OTHER_DATABASES, PG_SERVER, PG_UNATTRIBUTED, REDIS, SELF, pg_group


def test_total_is_services_postgres_and_redis_only() -> None:
    used = {"withdraw_svc": 4.0, "account_svc": 1.0, "recon_svc": 0.5, pg_group("withdraw_svc"): 2.0,
            PG_SERVER: 0.25, REDIS: 0.25, SELF: 3.0, PG_OTHER_DATABASES: 7.0, PG_UNATTRIBUTED: 0.5}
    rows = cost_rows(used, host_busy_s=30.0, idle={"withdraw_svc": 0.01, REDIS: 0.02})
    by_label = {r.label: r for r in rows}
    assert total_of(rows).cpu_s == pytest.approx(8.0)
    assert total_of(rows).idle_cores == pytest.approx(0.03)
    assert by_label["PostgreSQL"].cpu_s == pytest.approx(2.25)
    assert by_label["rest of the host (other work on the machine)"].cpu_s == pytest.approx(30.0 - 18.5)
    table = format_table(rows, orders=1000, window_s=10.0)
    assert "total" in table and "8.000" in table   # ms per order of the total


def test_counter_total_sums_every_label_set_of_one_counter() -> None:
    page = "\n".join([
        "# HELP recon_self_checked_orders_total settled orders checked",
        'recon_self_checked_orders_total{otel_scope_name="recon_svc"} 2102.0',
        'recon_self_checked_orders_total{otel_scope_name="other"} 3.0',
        'recon_self_checked_orders_created{otel_scope_name="recon_svc"} 1.7e9',
        'rpc_server_requests_total{rpc_method="/mesh.account.v1.AccountService/Deduct"} 9.0',
    ])
    assert counter_total(page, "recon_self_checked_orders_total") == 2105


def test_metrics_url_follows_the_service_port() -> None:
    assert metrics_url({}) == "http://127.0.0.1:51054/metrics"
    assert metrics_url({"RECON_SVC_ADDR": "127.0.0.1:6000"}) == "http://127.0.0.1:7000/metrics"
    assert metrics_url({"RECON_SVC_METRICS_PORT": "0"}) is None
    assert metrics_url({}, "account_svc") == "http://127.0.0.1:51051/metrics"


def test_calls_table_counts_each_method_made_in_the_window_per_order() -> None:
    page = "\n".join([
        '# HELP rpc_server_requests_total RPCs by method and status',
        'rpc_server_requests_total{otel_scope_name="meshkit.grpc",rpc_grpc_status="OK",'
        'rpc_method="/mesh.account.v1.AccountService/DeductBatch"} 30.0',
        'rpc_server_requests_total{otel_scope_name="meshkit.grpc",rpc_grpc_status="UNAVAILABLE",'
        'rpc_method="/mesh.account.v1.AccountService/DeductBatch"} 2.0',
        'rpc_server_requests_total{otel_scope_name="meshkit.grpc",rpc_grpc_status="OK",'
        'rpc_method="/mesh.account.v1.AccountService/GetBalance"} 7.0',
    ])
    after = {"account_svc": server_calls(page)}
    assert after == {"account_svc": {"DeductBatch": 32.0, "GetBalance": 7.0}}
    before = {"account_svc": {"DeductBatch": 12.0, "GetBalance": 7.0}}
    table = calls_table(before, after, orders=40)
    rows = {line.split()[1]: line.split()[2:] for line in table.splitlines()[1:] if line.split()[0] != "all"}
    assert rows == {"DeductBatch": ["20", "0.500"]}  # GetBalance made no call in the window
    assert table.splitlines()[-1].split()[1:] == ["20", "0.500"]
