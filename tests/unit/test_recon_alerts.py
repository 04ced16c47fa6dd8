"""A new discrepancy is logged at WARNING with its order id and counted by reason."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from meshkit.logs import JsonFormatter
from recon_svc.alerts import COUNTER, Alerts
from recon_svc.domain import Discrepancy

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def discrepancy(i: int, reason: str) -> Discrepancy:
    return Discrepancy(i, reason, f"o-{i}", f"o-{i}", 42, "2 debits", "OPEN", "realtime", "", AT, AT)


def counts(reader: InMemoryMetricReader) -> dict[str, int]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, int] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == COUNTER:
                    for point in metric.data.data_points:
                        out[str(point.attributes["reason"])] = int(point.value)
    return out


def test_publish_logs_and_counts_each_new_discrepancy(caplog: pytest.LogCaptureFixture) -> None:
    reader = InMemoryMetricReader()
    alerts = Alerts("", 1.0, meter=MeterProvider(metric_readers=[reader]).get_meter("test"))
    with caplog.at_level(logging.WARNING, logger="recon_svc.alerts"):
        alerts.publish([discrepancy(1, "double_debit"), discrepancy(2, "double_debit"),
                        discrepancy(3, "missing_refund")])
    assert counts(reader) == {"double_debit": 2, "missing_refund": 1}
    assert len(caplog.records) == 3
    line = json.loads(JsonFormatter("recon_svc").format(caplog.records[0]))
    assert line["level"] == "WARNING" and line["order_id"] == "o-1" and line["uid"] == 42
    assert line["reason"] == "double_debit" and line["source"] == "realtime"


async def test_a_failing_webhook_is_logged_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    reader = InMemoryMetricReader()
    # An unsupported scheme fails inside urllib without touching the network.
    alerts = Alerts("nowhere://hook", 1.0, meter=MeterProvider(metric_readers=[reader]).get_meter("test"))
    with caplog.at_level(logging.WARNING, logger="recon_svc.alerts"):
        alerts.publish([discrepancy(7, "double_payout")])
        await alerts.close()
    assert any("webhook nowhere://hook failed for discrepancy 7" in r.getMessage() for r in caplog.records)
    assert counts(reader) == {"double_payout": 1}
