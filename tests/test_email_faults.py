"""Email under faults: a slow SMTP server, a worker killed with SIGKILL, an SMTP outage, a
lost lease. Real aiosmtpd servers, real ``notifyhub worker`` processes, PostgreSQL, Redis.

What must hold: every email is sent exactly once (counted by ``Message-ID`` at the server),
retries wait in the database instead of in worker slots, and an attempt that no longer
holds its email does not send.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import make_engine, make_session_factory
from db.models import Email
from hub.delivery.bus import LocalBus
from hub.errors import Unavailable
from hub.intake.apply import EventApplier, email_id_for
from hub.intake.envelope import validate_envelope
from hub.rules import NotificationLimits
from hub.services import emails, leases
from hub.services.notifications import NotificationService
from hub.settings import Settings
from tasks import smtp
from tasks.auth_service import SmtpConfig
from tasks.email import deliver
from tasks.leases import Lease, LeaseLost
from tasks.resources import email_resources
from tasks.smtp import stable_message_id
from tasks.sweeper import EmailSweeper
from tasks.templates import RenderedEmail
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import RunningHub
from tests.harness.ports import eventually, free_port
from tests.harness.smtp import SmtpSink, smtp_config, start_smtp_sink
from tests.harness.worker import WorkerStarter
from tests.test_email import TEMPLATE, queue

SENDER = "a@t.example"


@pytest.fixture
def sink() -> Iterator[tuple[SmtpSink, list[Controller]]]:
    """An SMTP sink and its live controllers (a test may pop one to stop it, and restart)."""
    server, controller = start_smtp_sink()
    controllers = [controller]
    try:
        yield server, controllers
    finally:
        for each in controllers:
            each.stop()


@pytest.fixture
def fault_settings(email_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """The email tests' short leases and backoffs, with sweeps every 0.2 s."""

    def build(**overrides: Any) -> Settings:
        return email_settings(**{"email_sweep_interval_seconds": 0.2, **overrides})

    return build


@pytest.fixture
def mail_tenant(
    auth_service: AuthServiceStub, sink: tuple[SmtpSink, list[Controller]], tenant: str
) -> str:
    auth_service.smtp_configs[tenant] = smtp_config(sink[0], SENDER, "T")
    auth_service.templates[(tenant, "interview")] = TEMPLATE
    return tenant


@pytest.fixture
async def sessions(postgres_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(postgres_url, pool_size=2)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def rows(
    sessions: async_sessionmaker[AsyncSession], ids: list[str]
) -> dict[str, tuple[str, int]]:
    """``{email_id: (status, attempts)}``."""
    async with sessions() as session:
        result = await session.execute(
            select(Email.id, Email.status, Email.attempts).where(Email.id.in_(ids))
        )
        return {row.id: (row.status, row.attempts) for row in result}


async def wait_all(
    sessions: async_sessionmaker[AsyncSession], ids: list[str], status: str, timeout: float
) -> None:
    async def reached() -> bool:
        found = await rows(sessions, ids)
        return len(found) == len(ids) and all(s == status for s, _ in found.values())

    await eventually(reached, timeout=timeout, interval=0.1)


def request_for(tenant: str, to: str) -> emails.EmailRequest:
    return emails.EmailRequest(
        tenant, to, None, "interview", {"Candidate Name": "Ada", "Job Title": "QA", "time": "9"}
    )


async def test_slow_smtp_and_a_killed_worker_send_every_email_exactly_once(
    hub_factory: Callable[..., Any],
    fault_settings: Callable[..., Settings],
    worker_process: WorkerStarter,
    sink: tuple[SmtpSink, list[Controller]],
    mail_tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Tasks wait for the 4 pooled connections far longer than the 1 s lease (and than
    the 2 s after which the stream hands a task to another consumer), which used to send
    emails twice without any fault; then one of two workers is killed with messages in
    mid-DATA and restarted."""
    server = sink[0]
    server.delay_seconds = 0.5
    settings = fault_settings(smtp_max_connections=4)
    hub: RunningHub = await hub_factory(settings)
    victim = await worker_process(settings)
    ids = [await queue(hub, mail_tenant, f"user{i}@example.com") for i in range(80)]
    # The victim has read the whole stream and claimed 50 (its task slots): its four
    # connections stay busy. The second worker gets what the stream hands over.
    await eventually(lambda: len(server.messages) >= 4, timeout=20)
    await worker_process(settings)

    await eventually(lambda: len(server.messages) >= 24, timeout=20)
    # Hold every reply, so the victim dies with messages in mid-DATA (the server drops
    # them, as a server that takes a message only with its reply does) and none between
    # the server's acceptance and its record: that millisecond window is the one a stable
    # Message-ID covers, by letting receivers drop the copy.
    server.paused = True
    await asyncio.sleep(server.delay_seconds + 0.3)
    in_flight = server.in_data
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait)
    await asyncio.sleep(0.3)
    assert server.in_data < in_flight, "the killed worker had no message in flight"
    server.paused = False
    await worker_process(settings)  # the killed one, restarted

    await wait_all(sessions, ids, leases.SENT, timeout=40)
    received = Counter(server.message_ids())
    expected = {stable_message_id(email_id, sender=SENDER) for email_id in ids}
    assert {mid for mid, n in received.items() if n > 1} == set(), "sent twice"
    assert set(received) == expected, "lost or unexpected"
    assert server.max_in_data <= 8  # 4 pooled connections per worker


async def test_smtp_outage_retries_wait_in_storage_and_drain_at_pool_speed(
    hub_factory: Callable[..., Any],
    fault_settings: Callable[..., Settings],
    worker_process: WorkerStarter,
    sink: tuple[SmtpSink, list[Controller]],
    mail_tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """SMTP down with 40 queued, 10 task slots: every email is tried during the outage
    (none sleeps in a slot), none gives up, and once the server is back
    all go out exactly once, through the whole pool at once: the first send that reaches
    the server again makes the held-back mail due, rather than each waiting out its
    backoff (up to 5 s here)."""
    server, controllers = sink
    controllers.pop().stop()
    settings = fault_settings(
        email_worker_concurrency=10, smtp_max_connections=4, email_retry_max_seconds=5.0
    )
    hub: RunningHub = await hub_factory(settings)
    await worker_process(settings)
    outage_started = time.monotonic()
    ids = [await queue(hub, mail_tenant, f"late{i}@example.com") for i in range(40)]

    async def all_retried() -> bool:
        found = await rows(sessions, ids)
        return len(found) == len(ids) and all(n >= 2 for _, n in found.values())

    await eventually(all_retried, timeout=10, interval=0.1)
    await asyncio.sleep(max(0.0, 6.0 - (time.monotonic() - outage_started)))
    states = await rows(sessions, ids)
    assert {status for status, _ in states.values()} <= {leases.RETRYING, leases.SENDING}
    assert server.messages == []

    server.delay_seconds = 0.05
    back = time.monotonic()
    controllers.append(start_smtp_sink(server)[1])
    await wait_all(sessions, ids, leases.SENT, timeout=15)
    drained = time.monotonic() - back
    received = Counter(server.message_ids())
    assert received == Counter({stable_message_id(i, sender=SENDER): 1 for i in ids})
    assert server.max_in_data == 4, "the pool's connections were not all used"
    # First due retry + sweep 0.2 s + 40 x 0.05 s over 4 connections: about 1 s; waiting
    # out the backoffs would take up to 6.25 s.
    print(f"\nSMTP back: 40 emails drained in {drained:.2f}s")
    assert drained < 4.0


async def test_an_attempt_that_lost_its_lease_does_not_send(
    fault_settings: Callable[..., Settings],
    sink: tuple[SmtpSink, list[Controller]],
    mail_tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """One pooled connection, busy for 1 s: the second email's attempt waits for it while
    another worker takes that email over (as it may once this worker could not renew the
    lease for a whole lease period). When the connection frees, the attempt must not send,
    and must leave the other worker's claim alone."""
    server = sink[0]
    server.delay_seconds = 1.0
    settings = fault_settings(smtp_max_connections=1)
    first, second = emails.new_email_id(), emails.new_email_id()
    async with email_resources(settings) as resources:
        sending_first = asyncio.create_task(
            deliver(resources, email_id=first, request=request_for(mail_tenant, "one@x.example"))
        )
        await eventually(lambda: server.in_data == 1, timeout=10)
        sending_second = asyncio.create_task(
            deliver(resources, email_id=second, request=request_for(mail_tenant, "two@x.example"))
        )

        async def second_claimed() -> bool:
            return (await rows(sessions, [second])).get(second) == (leases.SENDING, 1)

        await eventually(second_claimed, timeout=5)
        later = datetime.now(UTC) + timedelta(seconds=60)
        async with sessions() as session, session.begin():
            await session.execute(
                update(Email)
                .where(Email.id == second)
                .values(attempts=Email.attempts + 1, lease_until=later, next_attempt_at=later)
            )
        await asyncio.wait_for(asyncio.gather(sending_first, sending_second), timeout=10)
    assert server.message_ids() == [stable_message_id(first, sender=SENDER)]
    assert (await rows(sessions, [first, second])) == {
        first: (leases.SENT, 1),
        second: (leases.SENDING, 2),  # the other worker's claim, untouched
    }


async def test_sweeper_takes_over_an_email_whose_worker_died_after_its_task_was_acked(
    fault_settings: Callable[..., Settings],
    worker_process: WorkerStarter,
    sink: tuple[SmtpSink, list[Controller]],
    mail_tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A claimed ``sending`` email with no task left in the stream (a second consumer
    acknowledged it while the first was still alive, then the first died): the lease runs
    out and a worker's sweeper sends it."""
    email_id = emails.new_email_id()
    await emails.record_email(
        sessions=sessions,
        email_id=email_id,
        request=request_for(mail_tenant, "orphan@x.example"),
        sweep_after_seconds=60,
    )
    assert await emails.claim(sessions=sessions, email_id=email_id, lease_seconds=1.0)
    await worker_process(fault_settings())
    await wait_all(sessions, [email_id], leases.SENT, timeout=15)
    assert (await rows(sessions, [email_id]))[email_id] == (leases.SENT, 2)
    assert sink[0].message_ids() == [stable_message_id(email_id, sender=SENDER)]


async def test_transient_failures_retry_until_the_window_ends_then_fail(
    fault_settings: Callable[..., Settings],
    auth_service: AuthServiceStub,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Nothing listens on the tenant's SMTP port: retried from storage by the sweeper
    (no task sleeps) until the retry window is over, then ``failed`` with the reason."""
    dead = SmtpSink(host="127.0.0.1", port=free_port())
    auth_service.smtp_configs[tenant] = smtp_config(dead, SENDER, "T")
    auth_service.templates[(tenant, "interview")] = TEMPLATE
    settings = fault_settings(
        redis_url=None,
        email_retry_window_seconds=2.0,
        email_retry_base_seconds=0.1,
        email_retry_max_seconds=0.3,
        email_sweep_interval_seconds=0.1,
    )
    email_id = emails.new_email_id()
    async with email_resources(settings) as resources:
        started = time.monotonic()
        await deliver(resources, email_id=email_id, request=request_for(tenant, "z@x.example"))
        # The task made one attempt and returned instead of sleeping until the next.
        assert time.monotonic() - started < 2.0
        assert (await rows(sessions, [email_id]))[email_id] == (leases.RETRYING, 1)
        sweeper = EmailSweeper(resources, concurrency=5, interval=0.1)
        sweeping = asyncio.create_task(sweeper.run())
        try:
            await wait_all(sessions, [email_id], leases.FAILED, timeout=10)
        finally:
            sweeper.stop()
            await sweeping
            await sweeper.close(1.0)
    _status, attempts = (await rows(sessions, [email_id]))[email_id]
    assert attempts >= 4
    async with sessions() as session:
        error = await session.scalar(select(Email.last_error).where(Email.id == email_id))
    assert error is not None and error.startswith(f"gave up after {attempts} attempts")


async def test_concurrent_sweeps_take_at_most_their_limit_and_never_the_same_email(
    sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    ids = [emails.new_email_id() for _ in range(30)]
    for email_id in ids:
        await emails.record_email(
            sessions=sessions,
            email_id=email_id,
            request=request_for(tenant, "s@x.example"),
            sweep_after_seconds=-1.0,  # due at once
        )
    batches = await asyncio.gather(
        *(emails.claim_due(sessions=sessions, limit=4, lease_seconds=30) for _ in range(6))
    )
    # (Due emails left by earlier tests in this database may be among those taken.)
    taken = [claim.email_id for batch in batches for claim in batch]
    assert all(len(batch) <= 4 for batch in batches)
    assert len(taken) == len(set(taken))
    assert len(set(taken) & set(ids)) >= 20


async def test_pool_probes_a_server_it_could_not_reach_until_it_answers(
    sink: tuple[SmtpSink, list[Controller]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mail held back by an outage need not wait for its own next attempt: the sweeper
    probes the server and releases that mail as soon as it answers."""
    monkeypatch.setattr(smtp, "PROBE_FIRST_SECONDS", 0.0)
    monkeypatch.setattr(smtp, "PROBE_MAX_SECONDS", 0.0)  # every probe due at once
    server, controllers = sink
    controllers.pop().stop()
    config = SmtpConfig(**smtp_config(server, SENDER, "T"))
    rendered = RenderedEmail(subject="s", html="<p>h</p>", text="h")

    def message(to: str) -> EmailMessage:
        return smtp.build_message(config, to_email=to, rendered=rendered)

    async with smtp.SmtpPool(timeout_seconds=2) as pool:
        assert await pool.probe_unreachable() == []  # nothing to probe yet
        with pytest.raises(smtp.SmtpTransientError):
            await pool.send(config, message("a@x.example"))
        assert await pool.probe_unreachable() == []  # still down
        controllers.append(start_smtp_sink(server)[1])
        assert await pool.probe_unreachable() == [f"{server.host}:{server.port}"]
        assert await pool.probe_unreachable() == []  # reachable: no more probes
        opened = pool.connections_opened
        await pool.send(config, message("b@x.example"))
        assert pool.connections_opened == opened  # the probe's connection was kept
    assert [str(m["To"]) for m in server.messages] == ["b@x.example"]


def test_message_id_is_stable_per_email() -> None:
    assert stable_message_id("abc123", sender="a@t.example") == "<abc123@t.example>"
    assert stable_message_id("abc123", sender="b@t.example") == "<abc123@t.example>"
    odd = stable_message_id("a b<c>@d", sender="a@t.example")
    assert odd == stable_message_id("a b<c>@d", sender="a@t.example")
    assert odd.startswith("<") and " " not in odd and odd.count("@") == 1


def test_a_lease_not_renewed_in_time_stops_the_send() -> None:
    now = time.monotonic()
    Lease(email_id="e", attempt=1, valid_until=now + 10, margin=1).check()
    with pytest.raises(LeaseLost):
        Lease(email_id="e", attempt=1, valid_until=now + 0.5, margin=1).check()
    with pytest.raises(LeaseLost):
        Lease(email_id="e", attempt=1, valid_until=now + 10, margin=1, lost=True).check()


class DownQueue:
    """A task queue that is away (Redis down)."""

    async def kick(self, *, email_id: str, request: emails.EmailRequest) -> None:
        raise Unavailable("the email queue is unavailable (Redis does not answer)")


async def test_an_email_is_stored_before_its_task_is_queued(
    sessions: async_sessionmaker[AsyncSession], mail_tenant: str
) -> None:
    """Accepted means stored: with the task queue away the email is still recorded
    ``queued`` (the sweeper sends it after the reclaim interval), never lost after a 202;
    and a failure to record kicks nothing, so the caller's retry cannot send it twice."""
    service = emails.EmailService(queue=DownQueue(), sessions=sessions, sweep_after_seconds=30.0)
    email_id = await service.send(request_for(mail_tenant, "kept@example.com"))
    stored = await service.status(tenant_id=mail_tenant, email_id=email_id)
    assert stored["status"] == "queued"


async def test_an_events_email_is_stored_with_the_event(
    sessions: async_sessionmaker[AsyncSession], mail_tenant: str
) -> None:
    """The event applies and its email is stored ``queued`` in the same transaction, even
    with the task queue away: a worker's sweeper sends it later, nothing is lost."""
    event = validate_envelope(
        {
            "event_id": "evt-mail-1",
            "tenant_id": mail_tenant,
            "type": "interview.scheduled",
            "recipients": [{"user_id": "u1", "email": "cand@example.com"}],
            "email": {"template_key": "interview", "context": {"Candidate Name": "Ada"}},
        },
        NotificationLimits(),
    )
    notifications = NotificationService(
        sessions=sessions, bus=LocalBus(), limits=NotificationLimits()
    )
    email_service = emails.EmailService(
        queue=DownQueue(), sessions=sessions, sweep_after_seconds=120.0
    )
    apply = EventApplier(notifications=notifications, emails=email_service, source="test")
    outcome = await apply([event])
    assert (outcome.applied, outcome.emails) == (1, 1)
    stored = await email_service.status(tenant_id=mail_tenant, email_id=email_id_for(event, "u1"))
    assert (stored["status"], stored["to_email"]) == ("queued", "cand@example.com")
