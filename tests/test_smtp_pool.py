"""tasks.smtp against real aiosmtpd servers on loopback: messages, pooling, failure classes."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509

from tasks.auth_service import SmtpConfig
from tasks.smtp import SmtpPermanentError, SmtpPool, SmtpTransientError, build_message
from tasks.templates import RenderedEmail
from tests.harness.certificates import self_signed_certificate
from tests.harness.ports import eventually, free_port
from tests.harness.smtp import SmtpSink

SUBJECT = "Ваш счёт готов — «Acme» ✓"
TEXT = "Bonjour Zoë,\n\nvotre facture n° 42 est prête.\n"
HTML = "<p>Bonjour <b>Zoë</b>,</p><p>votre facture n° 42 est prête.</p>"
RENDERED = RenderedEmail(subject=SUBJECT, html=HTML, text=TEXT)
PASSWORDS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}


def smtp_config(
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    from_name: str | None = "Acme Café",
) -> SmtpConfig:
    return SmtpConfig(
        host="127.0.0.1",
        port=port,
        username=username,
        password=password,
        use_tls=False,
        start_tls=False,
        from_email="billing@acme.example",
        from_name=from_name,
    )


def message_to(config: SmtpConfig, to_email: str = "zoe@customer.example") -> EmailMessage:
    return build_message(config, to_email=to_email, rendered=RENDERED)


@pytest.fixture
async def pool() -> AsyncIterator[SmtpPool]:
    async with SmtpPool(validate_certs=False, timeout_seconds=5) as smtp_pool:
        yield smtp_pool


# -- a server that counts its sessions ---------------------------------------------------


@dataclass
class Recorder:
    """What a counting server saw: sessions, concurrency, logins and messages."""

    messages: list[EmailMessage] = field(default_factory=list)
    sessions_opened: int = 0
    sessions_open: int = 0
    most_open: int = 0
    # peer (ip, port) of each accepted message's session, and the login it used.
    message_peers: list[tuple[Any, str | None]] = field(default_factory=list)
    data_delay: float = 0.0
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    # Close the session instead of answering the k-th MAIL command of a server (1-based).
    drop_on_mail: set[int] = field(default_factory=set)
    mail_commands: int = 0

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        if self.mail_commands in self.drop_on_mail:
            # Like a server that timed the idle connection out just as the client wrote.
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 closing connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)
        login = session.auth_data.login.decode() if session.auth_data else None
        self.message_peers.append((session.peer, login))
        return "250 Message accepted for delivery"


class CountingSMTP(SMTP):
    recorder: Recorder

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        new_session = self.transport is None  # STARTTLS calls this again; not used here
        super().connection_made(transport)
        if new_session:
            rec = self.recorder
            rec.sessions_opened += 1
            rec.sessions_open += 1
            rec.most_open = max(rec.most_open, rec.sessions_open)

    def connection_lost(self, error: Exception | None) -> None:
        self.recorder.sessions_open -= 1
        super().connection_lost(error)


class CountingController(Controller):
    def __init__(self, recorder: Recorder, **kwargs: Any) -> None:
        self.recorder = recorder
        super().__init__(recorder, hostname="127.0.0.1", **kwargs)

    def factory(self) -> SMTP:
        server = CountingSMTP(self.handler, **self.SMTP_kwargs)
        server.recorder = self.recorder
        return server


def authenticate(
    server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    if not isinstance(auth_data, LoginPassword):
        return AuthResult(success=False, handled=False)
    login, password = auth_data.login.decode(), auth_data.password.decode()
    if PASSWORDS.get(login) != password:
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535
    return AuthResult(success=True, auth_data=auth_data)


@dataclass
class CountingServer:
    recorder: Recorder
    port: int
    controller: CountingController


def start_counting_server(port: int | None = None, **smtp_kwargs: Any) -> CountingServer:
    port = port or free_port()
    recorder = Recorder()
    controller = CountingController(recorder, port=port, **smtp_kwargs)
    controller.start()
    # Controller.start() opens a connection of its own to check that the server is up.
    wait_until(lambda: recorder.sessions_open == 0)
    recorder.sessions_opened = recorder.most_open = 0
    return CountingServer(recorder=recorder, port=port, controller=controller)


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.005)


@pytest.fixture
def counting_server() -> Iterator[CountingServer]:
    server = start_counting_server()
    try:
        yield server
    finally:
        server.controller.stop()


@pytest.fixture
def auth_server() -> Iterator[CountingServer]:
    server = start_counting_server(authenticator=authenticate, auth_require_tls=False)
    try:
        yield server
    finally:
        server.controller.stop()


# -- messages -----------------------------------------------------------------------------


async def test_delivered_message_has_headers_and_both_parts(
    smtp_server: SmtpSink, pool: SmtpPool
) -> None:
    config = smtp_config(smtp_server.port)
    message = message_to(config)

    message_id = await pool.send(config, message)

    assert len(smtp_server.messages) == 1
    got = smtp_server.messages[0]
    assert smtp_server.envelopes == [("billing@acme.example", ["zoe@customer.example"])]
    sender = got["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Acme Café", "billing@acme.example")
    assert got["To"].addresses[0].addr_spec == "zoe@customer.example"
    assert got["Subject"] == SUBJECT
    assert got["Date"] is not None
    assert got["Message-ID"] == message_id == message["Message-ID"]
    assert message_id.endswith("@acme.example>")
    assert got.get_content_type() == "multipart/alternative"
    parts = list(got.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    # On the wire lines end in CRLF.
    assert parts[0].get_content().replace("\r\n", "\n") == TEXT
    assert parts[1].get_content().replace("\r\n", "\n").rstrip("\n") == HTML


async def test_given_message_id_and_plain_from(smtp_server: SmtpSink, pool: SmtpPool) -> None:
    config = smtp_config(smtp_server.port, from_name=None)
    message = build_message(
        config, to_email="a@b.example", rendered=RENDERED, message_id="<email-42@notifyhub>"
    )
    assert await pool.send(config, message) == "<email-42@notifyhub>"
    got = smtp_server.messages[0]
    assert got["From"] == "billing@acme.example"
    assert got["Message-ID"] == "<email-42@notifyhub>"


@pytest.mark.parametrize(
    "to_email",
    [
        "",
        "no-at-sign.example",
        "two@@at.example",
        "a@b.example, c@d.example",
        "a@b.example\r\nBcc: victim@else.example",
        "a@b.example\nX-Injected: 1",
        "Zoë <zoe@customer.example>",
        "zoe@customer",
        "zoe @customer.example",
        "a@b.example\x00",
    ],
)
def test_invalid_recipient_is_permanent(to_email: str) -> None:
    with pytest.raises(SmtpPermanentError) as caught:
        build_message(smtp_config(25), to_email=to_email, rendered=RENDERED)
    assert "\n" not in str(caught.value)
    assert caught.value.code is None


def test_header_injection_through_subject_or_name_is_folded() -> None:
    config = smtp_config(25, from_name="Acme\r\nBcc: victim@else.example")
    rendered = RenderedEmail(subject="Hi\r\nBcc: victim@else.example", html=HTML, text=TEXT)
    message = build_message(config, to_email="a@b.example", rendered=rendered)
    wire = message.as_bytes()
    assert b"\nBcc:" not in wire
    assert message["Bcc"] is None
    assert message["Subject"] == "Hi Bcc: victim@else.example"


def test_invalid_sender_is_permanent() -> None:
    config = SmtpConfig(
        host="127.0.0.1",
        port=25,
        username=None,
        password=None,
        use_tls=False,
        start_tls=False,
        from_email="billing@acme.example\r\nBcc: victim@else.example",
        from_name=None,
    )
    with pytest.raises(SmtpPermanentError, match="sender"):
        build_message(config, to_email="a@b.example", rendered=RENDERED)


# -- pooling ------------------------------------------------------------------------------


async def test_pooled_sends_share_one_connection(counting_server: CountingServer) -> None:
    config = smtp_config(counting_server.port)
    async with SmtpPool(validate_certs=False) as pool:
        for n in range(20):
            await pool.send(config, message_to(config, f"user{n}@customer.example"))
        assert pool.connections_opened == 1
    rec = counting_server.recorder
    assert len(rec.messages) == 20
    assert rec.sessions_opened == 1
    assert len({peer for peer, _login in rec.message_peers}) == 1
    await eventually(lambda: rec.sessions_open == 0)  # close() QUITs the idle connection


async def test_without_reuse_every_mail_has_its_own_connection(
    counting_server: CountingServer,
) -> None:
    config = smtp_config(counting_server.port)
    async with SmtpPool(reuse=False, validate_certs=False) as pool:
        for n in range(5):
            await pool.send(config, message_to(config, f"user{n}@customer.example"))
    rec = counting_server.recorder
    assert len(rec.messages) == 5
    assert rec.sessions_opened == 5
    assert len({peer for peer, _login in rec.message_peers}) == 5
    await eventually(lambda: rec.sessions_open == 0)


async def test_concurrent_sends_are_bounded_per_server(counting_server: CountingServer) -> None:
    rec = counting_server.recorder
    rec.data_delay = 0.05  # slow enough that 10 senders really overlap
    config = smtp_config(counting_server.port)
    async with SmtpPool(max_connections_per_server=2, validate_certs=False) as pool:
        await asyncio.gather(
            *(pool.send(config, message_to(config, f"user{n}@customer.example")) for n in range(10))
        )
    assert len(rec.messages) == 10
    assert rec.most_open == 2
    assert rec.sessions_opened == 2


async def test_idle_connections_expire_in_the_pool(counting_server: CountingServer) -> None:
    config = smtp_config(counting_server.port)
    async with SmtpPool(idle_seconds=0.5, validate_certs=False) as pool:
        await pool.send(config, message_to(config))
        await pool.send(config, message_to(config))
        await asyncio.sleep(0.8)
        await pool.send(config, message_to(config))
    assert counting_server.recorder.sessions_opened == 2
    assert len(counting_server.recorder.messages) == 3


async def test_connection_timed_out_by_the_server_is_replaced() -> None:
    server = start_counting_server(timeout=0.5)  # aiosmtpd closes idle sessions after 0.5 s
    try:
        config = smtp_config(server.port)
        async with SmtpPool(validate_certs=False) as pool:
            await pool.send(config, message_to(config))
            await asyncio.sleep(1.0)
            await pool.send(config, message_to(config))
        assert server.recorder.sessions_opened == 2
        assert len(server.recorder.messages) == 2
    finally:
        server.controller.stop()


async def test_pooled_connection_dropped_mid_command_is_retried_once(
    counting_server: CountingServer,
) -> None:
    rec = counting_server.recorder
    rec.drop_on_mail = {2}  # the second mail, first on the reused connection, is cut off
    config = smtp_config(counting_server.port)
    async with SmtpPool(validate_certs=False) as pool:
        await pool.send(config, message_to(config, "first@customer.example"))
        await pool.send(config, message_to(config, "second@customer.example"))
        assert pool.connections_opened == 2
    assert [m["To"] for m in rec.messages] == ["first@customer.example", "second@customer.example"]
    assert rec.sessions_opened == 2


async def test_fresh_connection_dropped_is_not_retried(counting_server: CountingServer) -> None:
    rec = counting_server.recorder
    rec.drop_on_mail = {1}
    config = smtp_config(counting_server.port)
    async with SmtpPool(validate_certs=False) as pool:
        with pytest.raises(SmtpTransientError):
            await pool.send(config, message_to(config))
    assert rec.messages == []
    assert rec.sessions_opened == 1


async def test_different_usernames_never_share_a_connection(auth_server: CountingServer) -> None:
    alice = smtp_config(auth_server.port, username="alice", password=PASSWORDS["alice"])
    alice_again = smtp_config(auth_server.port, username="alice", password=PASSWORDS["alice"])
    bob = smtp_config(auth_server.port, username="bob", password=PASSWORDS["bob"])
    async with SmtpPool(validate_certs=False) as pool:
        for config in (alice, bob, alice_again, bob, alice, bob):
            await pool.send(config, message_to(config))
    rec = auth_server.recorder
    assert len(rec.messages) == 6
    assert rec.sessions_opened == 2  # same credentials (two tenants, say) share one
    logins_by_peer: dict[Any, set[str | None]] = {}
    for peer, login in rec.message_peers:
        logins_by_peer.setdefault(peer, set()).add(login)
    assert sorted(logins_by_peer.values(), key=sorted) == [{"alice"}, {"bob"}]


async def test_wrong_password_is_permanent_even_beside_a_pooled_login(
    auth_server: CountingServer,
) -> None:
    alice = smtp_config(auth_server.port, username="alice", password=PASSWORDS["alice"])
    impostor = smtp_config(auth_server.port, username="alice", password="guessed-password")
    async with SmtpPool(validate_certs=False) as pool:
        await pool.send(alice, message_to(alice))
        # Same username and server: it must not borrow alice's authenticated connection.
        with pytest.raises(SmtpPermanentError) as caught:
            await pool.send(impostor, message_to(impostor))
    assert caught.value.code == 535
    assert "guessed-password" not in str(caught.value)
    assert "guessed-password" not in repr(caught.value)
    assert len(auth_server.recorder.messages) == 1


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1."""
    cert, key = self_signed_certificate(
        tmp_path_factory.mktemp("smtp-tls"),
        common_name="127.0.0.1",
        alternative_name=x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def starttls_config(port: int) -> SmtpConfig:
    return SmtpConfig(
        host="127.0.0.1",
        port=port,
        username="alice",
        password=PASSWORDS["alice"],
        use_tls=False,
        start_tls=True,
        from_email="billing@acme.example",
        from_name="Acme Café",
    )


async def test_starttls_with_auth(tls_context: ssl.SSLContext) -> None:
    server = start_counting_server(
        tls_context=tls_context, require_starttls=True, authenticator=authenticate
    )
    try:
        config = starttls_config(server.port)
        for reuse in (True, False):
            async with SmtpPool(reuse=reuse, validate_certs=False) as pool:
                for n in range(3):
                    await pool.send(config, message_to(config, f"user{n}@customer.example"))
        rec = server.recorder
        assert len(rec.messages) == 6
        assert rec.sessions_opened == 1 + 3
        assert {login for _peer, login in rec.message_peers} == {"alice"}
    finally:
        server.controller.stop()


async def test_certificates_are_verified_by_default(tls_context: ssl.SSLContext) -> None:
    server = start_counting_server(
        tls_context=tls_context, require_starttls=True, authenticator=authenticate
    )
    try:
        config = starttls_config(server.port)
        async with SmtpPool() as pool:  # validate_certs=True: a self-signed cert is refused
            with pytest.raises(SmtpTransientError, match="certificate"):
                await pool.send(config, message_to(config))
        assert server.recorder.messages == []
    finally:
        server.controller.stop()


# -- failures -----------------------------------------------------------------------------


async def test_451_is_transient(smtp_server: SmtpSink, pool: SmtpPool) -> None:
    smtp_server.scripted_replies.append("451 4.3.0 try later")
    config = smtp_config(smtp_server.port)
    with pytest.raises(SmtpTransientError) as caught:
        await pool.send(config, message_to(config))
    assert caught.value.code == 451
    assert caught.value.reply == "4.3.0 try later"
    assert str(caught.value) == "451 4.3.0 try later"
    # The next attempt goes through (on a new connection: the errored one was discarded).
    await pool.send(config, message_to(config))
    assert len(smtp_server.messages) == 1


async def test_550_is_permanent(smtp_server: SmtpSink, pool: SmtpPool) -> None:
    smtp_server.scripted_replies.append("550 5.1.1 no such user")
    config = smtp_config(smtp_server.port)
    with pytest.raises(SmtpPermanentError) as caught:
        await pool.send(config, message_to(config))
    assert caught.value.code == 550
    assert str(caught.value) == "550 5.1.1 no such user"
    assert smtp_server.messages == []


async def test_refused_recipient_5xx_is_permanent_4xx_transient(
    counting_server: CountingServer, pool: SmtpPool
) -> None:
    rec = counting_server.recorder
    rec.rcpt_replies = {
        "gone@customer.example": "550 5.1.1 <gone@customer.example>: Recipient address rejected",
        "full@customer.example": "452 4.2.2 mailbox full",
    }
    config = smtp_config(counting_server.port)
    with pytest.raises(SmtpPermanentError) as permanent:
        await pool.send(config, message_to(config, "gone@customer.example"))
    assert permanent.value.code == 550
    assert str(permanent.value) == "550 5.1.1 <gone@customer.example>: Recipient address rejected"
    with pytest.raises(SmtpTransientError) as transient:
        await pool.send(config, message_to(config, "full@customer.example"))
    assert transient.value.code == 452
    assert rec.messages == []


async def test_stopped_server_is_transient(pool: SmtpPool) -> None:
    server = start_counting_server()
    config = smtp_config(server.port)
    await pool.send(config, message_to(config))
    server.controller.stop()
    # Both a pooled connection to it and a fresh connect attempt fail as "try later".
    with pytest.raises(SmtpTransientError) as caught:
        await pool.send(config, message_to(config))
    assert caught.value.code is None
    assert f"127.0.0.1:{server.port}" in str(caught.value)
    with pytest.raises(SmtpTransientError):
        await pool.send(config, message_to(config))


async def test_restarted_server_on_the_same_port_is_used_again(pool: SmtpPool) -> None:
    first = start_counting_server()
    config = smtp_config(first.port)
    await pool.send(config, message_to(config))
    first.controller.stop()
    second = start_counting_server(port=first.port)
    try:
        await pool.send(config, message_to(config))
        assert len(second.recorder.messages) == 1
    finally:
        second.controller.stop()


async def test_silent_server_times_out_as_transient() -> None:
    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never sends the 220 greeting
        writer.close()

    listener = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    config = smtp_config(port)
    try:
        async with SmtpPool(timeout_seconds=0.3, validate_certs=False) as pool:
            with pytest.raises(SmtpTransientError, match=r"127\.0\.0\.1"):
                await pool.send(config, message_to(config))
    finally:
        listener.close()


async def test_closed_pool_refuses_with_transient(smtp_server: SmtpSink) -> None:
    pool = SmtpPool(validate_certs=False)
    await pool.close()
    config = smtp_config(smtp_server.port)
    with pytest.raises(SmtpTransientError, match="closed"):
        await pool.send(config, message_to(config))
