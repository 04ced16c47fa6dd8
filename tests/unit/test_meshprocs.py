"""PostgreSQL processes are attributed to the service whose pool opened them, or kept out
of the mesh's figures when they belong to another database or to nobody known."""

from __future__ import annotations

from tools.loadlib.meshprocs import (
    PG_OTHER_DATABASES,
    PG_SERVER,
    PG_UNATTRIBUTED,
    SELF,
    Activity,
    classify_pg,
    mesh_schemas,
    pg_group,
)

APPS = {schema: svc for svc, schema in mesh_schemas({}).items()}


def group(activity: Activity | None, own: frozenset[int] = frozenset()) -> str:
    return classify_pg(activity, database="postgres", by_application=APPS, own_pids=own)


def test_service_backends_are_told_apart_by_application_name() -> None:
    assert group(Activity(1, "postgres", "withdraw", "client backend", None)) == pg_group("withdraw_svc")
    assert group(Activity(2, "postgres", "gateway", "client backend", None)) == pg_group("gateway_mock")


def test_server_processes_other_databases_and_strangers() -> None:
    assert group(Activity(3, "", "", "walwriter", None)) == PG_SERVER
    assert group(Activity(4, "mesh_test_1", "withdraw", "client backend", None)) == PG_OTHER_DATABASES
    assert group(Activity(5, "postgres", "psql", "client backend", None)) == PG_UNATTRIBUTED
    assert group(Activity(6, "postgres", "", "autovacuum worker", None)) == PG_UNATTRIBUTED
    assert group(None) == PG_UNATTRIBUTED
    assert group(Activity(7, "postgres", "cpu-monitor", "client backend", None), own=frozenset({7})) == SELF


def test_schemas_follow_the_environment() -> None:
    schemas = mesh_schemas({"RECON_SVC_DB_SCHEMA": "recon_lag_1"})
    assert schemas["recon_svc"] == "recon_lag_1"
    assert schemas["account_svc"] == "account"
