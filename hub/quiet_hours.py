"""When a user's quiet hours end: email and push wait until then, in the user's time zone.

Quiet hours are ``{"start": "HH:MM", "end": "HH:MM", "timezone": "<IANA name>"}`` (stored
and validated with the preferences); a window whose end is before its start runs over
midnight (22:00-07:00). Wall-clock times are read in the zone with ``zoneinfo``, so a
window keeps its local hours across daylight-saving changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hub.records import QuietHoursRecord


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def quiet_until(quiet: QuietHoursRecord | None, now: datetime) -> datetime | None:
    """The end of the quiet window ``now`` (aware) falls in, in UTC; None outside one."""
    if not quiet:
        return None
    zone = ZoneInfo(quiet["timezone"])
    start, end = _clock(quiet["start"]), _clock(quiet["end"])
    if start == end:
        return None  # an empty window
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
        end_day = local.date()
    else:  # over midnight: from start today to end tomorrow, or from yesterday to end today
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    # The local end on that day, as the zone has it then (a DST change in between moves
    # its UTC time, not its wall-clock time). An end that falls in a spring-forward gap is
    # read with the offset before the change, i.e. just after the gap.
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)
