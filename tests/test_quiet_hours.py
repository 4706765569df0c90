"""Quiet hours: inside or outside, over midnight, and across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.quiet_hours import quiet_until

NIGHT = {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}
LUNCH = {"start": "12:00", "end": "13:30", "timezone": "America/New_York"}
NY_NIGHT = {"start": "22:00", "end": "07:00", "timezone": "America/New_York"}
NY_GAP = {"start": "01:00", "end": "02:30", "timezone": "America/New_York"}
NY_REPEAT = {"start": "01:00", "end": "03:00", "timezone": "America/New_York"}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("quiet", "now", "until"),
    [
        # Berlin is UTC+1 in January: 23:00 local is inside, the window ends 07:00 local.
        (NIGHT, utc(2026, 1, 10, 22, 0), utc(2026, 1, 11, 6, 0)),
        # 01:30 local, after midnight: the window ends the same morning.
        (NIGHT, utc(2026, 1, 11, 0, 30), utc(2026, 1, 11, 6, 0)),
        # 07:00 local is outside (the end is exclusive), 21:59 too.
        (NIGHT, utc(2026, 1, 11, 6, 0), None),
        (NIGHT, utc(2026, 1, 10, 20, 59), None),
        # Summer, UTC+2: the same local hours, two hours earlier in UTC.
        (NIGHT, utc(2026, 7, 10, 21, 0), utc(2026, 7, 11, 5, 0)),
        # Berlin moves to summer time on 2026-03-29 at 02:00: a night that starts in winter
        # time ends at 07:00 summer time, 05:00 UTC (the night is an hour shorter).
        (NIGHT, utc(2026, 3, 28, 21, 30), utc(2026, 3, 29, 5, 0)),
        # And back on 2026-10-25: that night ends 07:00 winter time, 06:00 UTC.
        (NIGHT, utc(2026, 10, 24, 21, 30), utc(2026, 10, 25, 6, 0)),
        # A window within a day, in another zone (New York, UTC-5 in winter).
        (LUNCH, utc(2026, 2, 2, 17, 15), utc(2026, 2, 2, 18, 30)),
        # New York springs forward on 2026-03-08 at 02:00: a night from 22:30 EST ends at
        # 07:00 EDT, 11:00 UTC; it falls back on 2026-11-01: 07:00 EST, 12:00 UTC.
        (NY_NIGHT, utc(2026, 3, 8, 3, 30), utc(2026, 3, 8, 11, 0)),
        (NY_NIGHT, utc(2026, 11, 1, 2, 30), utc(2026, 11, 1, 12, 0)),
        # An end in the spring-forward gap (02:30 does not exist that night) is read with
        # the offset before the change: 07:30 UTC, i.e. 03:30 EDT, just after the gap.
        (NY_GAP, utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)),
        # The repeated hour of the fall-back night: 01:30 happens twice; both are inside a
        # 01:00-03:00 window, which ends at 03:00 EST, 08:00 UTC.
        (NY_REPEAT, utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 8, 0)),
        (NY_REPEAT, utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 8, 0)),
        (LUNCH, utc(2026, 2, 2, 18, 30), None),
        (None, utc(2026, 2, 2, 18, 30), None),
        ({"start": "09:00", "end": "09:00", "timezone": "UTC"}, utc(2026, 2, 2, 9, 0), None),
    ],
)
def test_quiet_until(quiet: dict[str, str] | None, now: datetime, until: datetime | None) -> None:
    assert quiet_until(quiet, now) == until
