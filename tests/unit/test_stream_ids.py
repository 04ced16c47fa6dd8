"""meshkit.streams.stream_id_key: stream entry ids order as numbers, not as text."""

from __future__ import annotations

from meshkit.streams import stream_id_key


def test_ids_order_by_milliseconds_then_sequence() -> None:
    ids = ["10-0", "9-5", "9-10", "0-0", "1700000000000-1"]
    assert sorted(ids, key=stream_id_key) == ["0-0", "9-5", "9-10", "10-0", "1700000000000-1"]
    assert "9-0" > "10-0" and stream_id_key("9-0") < stream_id_key("10-0")


def test_missing_parts_count_as_zero() -> None:
    assert stream_id_key("") == (0, 0)
    assert stream_id_key("5") == (5, 0)
