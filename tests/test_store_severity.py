"""A log line's severity as store.severity reads it, in real chDB: the most severe level the record states,
in its number, its text or its body (JSON level keys, logfmt, pino numbers, a leading level word)."""

from __future__ import annotations

import pytest

from store.severity import SEVERITY

CASES = [
    (0, "", '{"message": "payment failed", "severity": "error", "timestamp": "2026-01-01T00:00:00Z"}', 17),
    (9, "INFO", '{"message": "ok", "severity": "info"}', 9),
    (9, "INFO", '{"level": 50, "time": 1, "msg": "boom"}', 17),  # pino: a shipper's default INFO
    (0, "", '{"level": 40, "msg": "slow"}', 13),
    (0, "", 'time=2026-01-01T00:00:00Z level=error msg="db down"', 17),
    (0, "", "2026-01-01 12:00:00.123 ERROR [main] c.e.Checkout - failed", 17),
    (0, "", "2026-01-01 12:00:00.123 INFO [main] rendered the ERROR page", 9),
    (0, "WARNING", "something slow", 13),
    (17, "ERROR", '{"severity": "info"}', 17),  # never less than the record's own number
    (9, "INFO", "16:49:00.001 INFO c.e.Seat#115 [query][water level: 50, seatLevel=error]", 9),
    (9, "INFO", "the user said the error was fine", 9),  # prose is not a level
    (0, "", "the user said the error was fine", 0),
]


@pytest.mark.parametrize(("number", "text", "body", "want"), CASES)
def test_the_level_a_record_states_anywhere(root_store, number, text, body, want):
    got = root_store.query(
        f"SELECT {SEVERITY} AS s FROM (SELECT toUInt8({number}) AS SeverityNumber, "
        "{text:String} AS SeverityText, {body:String} AS Body)", parameters={"text": text, "body": body})
    assert got.rows[0][0] == want, body
