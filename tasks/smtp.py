"""Sending email over SMTP: building the message, classifying failures, pooling connections.

Email tasks need to know whether a failure is worth retrying, so every failure leaves this
module as :class:`SmtpTransientError` (retry later) or :class:`SmtpPermanentError` (give
up, record the reason). :class:`SmtpPool` keeps authenticated connections open between
sends within one worker process: the connect, EHLO, TLS and AUTH round trips are most of
the cost of one email on a fast server.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import Policy
from types import TracebackType
from typing import Any, Literal

import aiosmtplib
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import Default

from tasks.auth_service import SmtpConfig
from tasks.templates import RenderedEmail

__all__ = [
    "SendAborted",
    "SmtpError",
    "SmtpPermanentError",
    "SmtpPool",
    "SmtpTransientError",
    "build_message",
    "classify_error",
    "server_name",
    "stable_message_id",
]

log = logging.getLogger(__name__)

# RFC 5321 4.5.3.1: 64 octets of local part, 254 of a whole path.
_MAX_LOCAL_PART = 64
_MAX_ADDRESS = 254
_FORBIDDEN_IN_ADDRESS = frozenset('\r\n\0\t ,;<>()[]\\"')
# A server that is shutting down a connection (too many messages, idle, ...) answers 421.
_SERVICE_CLOSING = 421
# Probes of a server that could not be reached: after 1 s, then doubling up to 30 s.
PROBE_FIRST_SECONDS = 1.0
PROBE_MAX_SECONDS = 30.0


# -- errors ---------------------------------------------------------------------------


class SmtpError(Exception):
    """A failed send; ``str(err)`` is a one-line reason that never contains credentials."""

    def __init__(self, reason: str, *, code: int | None = None, reply: str = "") -> None:
        reason = _one_line(reason)
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.reply = reply

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps code and reply when the error is pickled (result backends, subprocesses).
        return (type(self), (self.reason,), {"code": self.code, "reply": self.reply})


class SmtpTransientError(SmtpError):
    """Worth retrying later: connection problems, timeouts, 4xx replies, TLS hiccups."""


class SmtpPermanentError(SmtpError):
    """Retrying cannot help: 5xx replies, refused credentials, an invalid address."""


class SendAborted(Exception):
    """Raised by a ``before_transmit`` guard: this message must not go out (e.g. the
    worker no longer holds the email's lease). Passed through unclassified."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reply_error(code: int, reply: str, *, what: str = "") -> SmtpError:
    """An error for an SMTP reply: 5xx is permanent, everything else transient."""
    reply = _one_line(reply)
    reason = f"{code} {reply}".strip()
    if what:
        reason = f"{reason} ({what})"
    cls = SmtpPermanentError if 500 <= code < 600 else SmtpTransientError
    return cls(reason, code=code, reply=reply)


def classify_error(exc: BaseException, *, server: str) -> SmtpError:  # noqa: PLR0911 - one return per failure family
    """Map an aiosmtplib / socket exception to a transient or permanent :class:`SmtpError`.

    ``server`` is ``host:port``, used in the reason of errors that have no SMTP reply.
    """
    if isinstance(exc, SmtpError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # Permanent only if every refusal is: one 4xx means the mail may go through later.
        refusals = exc.recipients
        reply = "; ".join(_one_line(f"{r.code} {r.message}") for r in refusals)
        codes = [r.code for r in refusals]
        permanent = bool(codes) and all(500 <= c < 600 for c in codes)
        cls = SmtpPermanentError if permanent else SmtpTransientError
        code = next((c for c in codes if not 500 <= c < 600), codes[0] if codes else None)
        return cls(reply or "all recipients refused", code=code, reply=reply)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # 535 (bad credentials) is permanent; 454 (temporary auth failure) is not.
        return _reply_error(exc.code, exc.message, what=f"authentication on {server}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return _reply_error(exc.code, exc.message, what="sender refused")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code < 400:  # -1 (unparsable reply) or an unexpected 2xx/3xx
            return SmtpTransientError(
                f"unexpected reply from {server}: {exc.code} {exc.message}",
                code=exc.code if exc.code > 0 else None,
                reply=_one_line(exc.message),
            )
        return _reply_error(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        # The server lacks what the tenant's settings or the address require
        # (STARTTLS, AUTH, SMTPUTF8): a configuration problem, not a passing one.
        return SmtpPermanentError(f"{server}: {exc.message}")
    if isinstance(exc, TimeoutError):  # SMTPTimeoutError and asyncio.TimeoutError too
        detail = str(exc) or "timed out"
        return SmtpTransientError(f"{server}: {detail}")
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        # Connect errors, disconnects, TLS handshake failures (ssl.SSLError is an OSError).
        detail = str(exc) or type(exc).__name__
        return SmtpTransientError(f"{server}: {detail}")
    if isinstance(exc, ValueError):
        # aiosmtplib refuses addresses that cannot go on an SMTP command line.
        return SmtpPermanentError(f"invalid message or address: {exc}")
    return SmtpTransientError(f"{server}: {type(exc).__name__}: {exc}")


# -- messages -------------------------------------------------------------------------


def _check_address(address: str, *, role: str) -> str:
    """A single plain ``local@domain`` address, or SmtpPermanentError."""
    candidate = address.strip() if isinstance(address, str) else ""
    problem = None
    if not candidate:
        problem = "empty"
    elif any(ch in _FORBIDDEN_IN_ADDRESS for ch in candidate):
        # CR/LF would inject headers or SMTP commands; commas, spaces and brackets would
        # smuggle in a second recipient or a display name.
        problem = "not a single plain address"
    elif candidate.count("@") != 1:
        problem = "needs exactly one @"
    else:
        local, domain = candidate.split("@")
        if not local or not domain or "." not in domain.strip("."):
            problem = "needs a local part and a domain"
        elif len(local.encode()) > _MAX_LOCAL_PART or len(candidate.encode()) > _MAX_ADDRESS:
            problem = "too long"
        elif domain.startswith(("-", ".")) or domain.endswith(("-", ".")) or ".." in domain:
            problem = "invalid domain"
        else:
            try:
                parsed = Address(addr_spec=candidate)
            except (ValueError, IndexError):
                problem = "invalid syntax"
            else:
                if parsed.addr_spec != candidate:
                    problem = "invalid syntax"
    if problem is not None:
        raise SmtpPermanentError(f"invalid {role} address {address!r}: {problem}")
    return candidate


def _header_text(value: str) -> str:
    # Folding CR/LF (and any other whitespace run) into one space keeps a template or a
    # tenant setting from starting a new header.
    return " ".join(value.split())


class OneLineHeader(str):
    """An ASCII header value written on one line as it is (up to RFC 5322's 998 characters).

    The email package folds a long value without spaces into RFC 2047 encoded words, which
    for a URL list such as ``List-Unsubscribe: <https://...>`` leaves no URL a mail client
    could follow. A value with a ``name`` is stored as it is and written by its ``fold``.
    """

    name: str

    def __new__(cls, name: str, value: str) -> OneLineHeader:
        if not value.isascii() or len(name) + len(value) + 2 > 998:
            raise ValueError(f"{name} must be ASCII and fit on one line")
        header = super().__new__(cls, value)
        header.name = name
        return header

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


_MESSAGE_ID_LEFT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


def stable_message_id(key: str, *, sender: str) -> str:
    """A ``Message-ID`` that depends only on ``key`` (an email's id) and the sender's domain.

    Every attempt of one email carries the same id, so when an attempt is repeated after
    the server took the message (a worker killed between the server's 250 and recording
    it), receivers can recognise and drop the copy.
    """
    domain = sender.rsplit("@", 1)[-1].strip() or "notifyhub.invalid"
    left = key if key and set(key) <= _MESSAGE_ID_LEFT and ".." not in key else ""
    if not left or left.startswith(".") or left.endswith(".") or len(left) > 64:
        # Anything else is hashed into a dot-atom, still one id per key.
        left = hashlib.sha256(key.encode()).hexdigest()[:40]
    return f"<{left}@{_header_text(domain)}>"


def build_message(
    config: SmtpConfig,
    *,
    to_email: str,
    rendered: RenderedEmail,
    message_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """A ``multipart/alternative`` UTF-8 email (text part first, then HTML) for one recipient,
    with ``headers`` added (``List-Unsubscribe``, say).

    Raises :class:`SmtpPermanentError` for an invalid recipient or sender address.
    """
    recipient = _check_address(to_email, role="recipient")
    sender = _check_address(config.from_email, role="sender")
    if message_id is None:
        message_id = email.utils.make_msgid(domain=sender.rsplit("@", 1)[1])
    else:
        message_id = _header_text(message_id)
        if not message_id.startswith("<"):
            message_id = f"<{message_id}>"

    message = EmailMessage()
    from_name = _header_text(config.from_name or "")
    # formataddr RFC 2047-encodes a non-ASCII display name and quotes specials.
    message["From"] = email.utils.formataddr((from_name, sender), charset="utf-8")
    message["To"] = recipient
    message["Subject"] = _header_text(rendered.subject)
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        message[name] = OneLineHeader(name, _header_text(value))
    message.set_content(rendered.text, subtype="plain", charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return message


# -- the connection pool --------------------------------------------------------------


class _Client(aiosmtplib.SMTP):
    """An SMTP client that remembers whether the message data was started.

    Once DATA has begun a lost connection may still mean a delivered email, so only a
    failure before it is safe to retry on a new connection.
    """

    data_started = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109 - aiosmtplib's signature
    ) -> SMTPResponse:
        self.data_started = True
        return await super().data(message, timeout=timeout)


@dataclass(frozen=True, slots=True)
class _ServerKey:
    """Which connections may be shared: same server, same TLS mode, same credentials."""

    host: str
    port: int
    username: str | None
    use_tls: bool
    start_tls: bool
    # A salted digest, not the password: a tenant with another tenant's username but a
    # different password must not ride on that tenant's authenticated connection.
    secret_digest: bytes = field(repr=False)


@dataclass(eq=False, slots=True)
class _Connection:
    client: _Client
    opened_at: float
    last_used: float
    sent: int = 0


@dataclass(eq=False, slots=True)
class _Server:
    slots: asyncio.Semaphore
    # Idle connections, least recently used on the left: new sends take from the right so
    # that a burst's spare connections age out on the left.
    idle: deque[_Connection] = field(default_factory=deque)
    # The last send could not reach the server (no SMTP reply at all: refused, timed out,
    # dropped); the next success is a recovery, which the caller may act on.
    unreachable: bool = False
    # While unreachable: the settings to probe it with and when (time.monotonic()).
    probe_config: SmtpConfig | None = None
    probe_at: float = 0.0
    probe_delay: float = 0.0


def server_name(config: SmtpConfig) -> str:
    """``host:port``; reasons of failures without an SMTP reply start with it and ': '."""
    return f"{config.host}:{config.port}"


class SmtpPool:
    """SMTP connections kept open and reused per server within one worker process.

    Connections are shared by configs with the same host, port, username, password and TLS
    mode, at most ``max_connections_per_server`` at a time (further senders wait). A
    connection idle for more than ``idle_seconds`` is closed rather than reused. With
    ``reuse=False`` every send opens its own connection and QUITs it.
    """

    def __init__(
        self,
        *,
        max_connections_per_server: int = 4,
        idle_seconds: float = 30.0,
        timeout_seconds: float = 10.0,
        reuse: bool = True,
        validate_certs: bool = True,
        local_hostname: str | None = None,
    ) -> None:
        if max_connections_per_server < 1:
            raise ValueError("max_connections_per_server must be at least 1")
        self.max_connections_per_server = max_connections_per_server
        self.idle_seconds = idle_seconds
        self.timeout_seconds = timeout_seconds
        self.reuse = reuse
        self.validate_certs = validate_certs
        self._local_hostname = local_hostname
        self._servers: dict[_ServerKey, _Server] = {}
        self._salt = secrets.token_bytes(16)
        self._tls_context: ssl.SSLContext | None = None
        self._closed = False
        self.connections_opened = 0

    async def __aenter__(self) -> SmtpPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(
        self,
        config: SmtpConfig,
        message: EmailMessage,
        *,
        before_transmit: Callable[[], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
    ) -> str:
        """Send ``message`` through the server of ``config``; returns its Message-ID.

        ``before_transmit`` is called once a connection is ready, right before the
        message goes out (waiting for a free connection can take long); it may raise
        :class:`SendAborted` to drop the message, which reaches the caller as is.
        ``on_recovered`` is called after a success when the previous send to this server
        could not reach it (mail held back by the outage may go now).

        Raises :class:`SmtpTransientError` or :class:`SmtpPermanentError`.
        """
        if self._closed:
            raise SmtpTransientError("SMTP pool is closed (worker shutting down)")
        name = server_name(config)
        server = self._server(config)
        async with server.slots:
            try:
                reply = await self._send_on_pool(server, config, message, name, before_transmit)
            except SendAborted:
                raise
            except Exception as exc:
                error = classify_error(exc, server=name)
                log.info(
                    "smtp send via %s failed (%s): %s",
                    name,
                    "permanent" if isinstance(error, SmtpPermanentError) else "transient",
                    error,
                )
                if isinstance(error, SmtpTransientError) and error.code is None:
                    self._mark_unreachable(server, config)
                raise error from exc
        if server.unreachable:
            server.unreachable = False
            log.info("smtp: %s answers again", name)
            if on_recovered is not None:
                on_recovered()
        message_id = message.get("Message-ID")
        return str(message_id) if message_id else reply

    async def probe_unreachable(self) -> list[str]:
        """Try to connect to each server the last send could not reach, when its probe is
        due (first after ``PROBE_FIRST_SECONDS``, then doubling up to
        ``PROBE_MAX_SECONDS``); the ``host:port`` of those that answer again.

        Mail held back by an outage otherwise waits for its own next attempt, which after
        a long outage can be minutes after the server returned. A probe that connects keeps
        its connection for the next send.
        """
        recovered: list[str] = []
        now = time.monotonic()
        for server in list(self._servers.values()):
            config = server.probe_config
            if not server.unreachable or config is None or now < server.probe_at:
                continue
            if server.slots.locked():
                continue  # sends are under way; their outcome tells the same
            async with server.slots:
                try:
                    conn = await self._open(config)
                except aiosmtplib.SMTPResponseException:
                    pass  # it answered (refusing us is for the next send to report)
                except Exception:  # any other failure: still unreachable
                    server.probe_delay = min(server.probe_delay * 2, PROBE_MAX_SECONDS)
                    server.probe_at = time.monotonic() + server.probe_delay
                    continue
                else:
                    await self._release(server, conn)
            if server.unreachable:  # a send may have found it back meanwhile
                server.unreachable = False
                log.info("smtp: %s answers again (probe)", server_name(config))
                recovered.append(server_name(config))
        return recovered

    def _mark_unreachable(self, server: _Server, config: SmtpConfig) -> None:
        if not server.unreachable:
            server.probe_delay = PROBE_FIRST_SECONDS
            server.probe_at = time.monotonic() + PROBE_FIRST_SECONDS
        server.unreachable = True
        server.probe_config = config

    async def close(self) -> None:
        """Close every idle connection; connections in use are closed when their send ends."""
        self._closed = True
        connections = [conn for server in self._servers.values() for conn in server.idle]
        for server in self._servers.values():
            server.idle.clear()
        await asyncio.gather(*(self._quit(conn.client) for conn in connections))

    # -- internals ------------------------------------------------------------------------

    def _server(self, config: SmtpConfig) -> _Server:
        secret = (config.password or "").encode()
        key = _ServerKey(
            host=config.host.lower(),
            port=config.port,
            username=config.username,
            use_tls=config.use_tls,
            start_tls=config.start_tls,
            secret_digest=hashlib.blake2b(secret, key=self._salt, digest_size=16).digest(),
        )
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = _Server(
                slots=asyncio.Semaphore(self.max_connections_per_server)
            )
        return server

    async def _send_on_pool(
        self,
        server: _Server,
        config: SmtpConfig,
        message: EmailMessage,
        server_name: str,
        before_transmit: Callable[[], None] | None,
    ) -> str:
        conn = self._take_idle(server)
        reused = conn is not None
        if conn is None:
            conn = await self._open(config)
        await self._check(server, conn, before_transmit)
        try:
            reply = await self._transmit(conn, message)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            if not reused or conn.client.data_started:
                raise
            # The server closed a connection we kept (idle timeout, restart) just as we
            # used it; nothing of this message reached it, so once more on a new one.
            log.info(
                "smtp: pooled connection to %s was closed (%s); reconnecting", server_name, exc
            )
        except aiosmtplib.SMTPResponseException as exc:
            if not (reused and exc.code == _SERVICE_CLOSING and not conn.client.data_started):
                raise
            log.info("smtp: %s closed a pooled connection (421); reconnecting", server_name)
        else:
            await self._release(server, conn)
            return reply
        conn = await self._open(config)
        await self._check(server, conn, before_transmit)
        reply = await self._transmit(conn, message)
        await self._release(server, conn)
        return reply

    async def _check(
        self, server: _Server, conn: _Connection, before_transmit: Callable[[], None] | None
    ) -> None:
        if before_transmit is None:
            return
        try:
            before_transmit()
        except BaseException:
            await self._release(server, conn)  # unused: the next sender may have it
            raise

    async def _transmit(self, conn: _Connection, message: EmailMessage) -> str:
        conn.client.data_started = False
        ok = False
        try:
            _refused, reply = await conn.client.send_message(message)
            ok = True
        finally:
            if not ok:
                # An errored or cancelled transaction leaves the session in an unknown
                # state: never hand it to the next sender.
                conn.client.close()
        conn.sent += 1
        conn.last_used = time.monotonic()
        return reply

    def _take_idle(self, server: _Server) -> _Connection | None:
        if not self.reuse:
            return None
        now = time.monotonic()
        idle = server.idle
        while idle and now - idle[0].last_used > self.idle_seconds:
            # Closed rather than QUIT: the server may well have dropped it already.
            idle.popleft().client.close()
        while idle:
            conn = idle.pop()
            if conn.client.is_connected:
                return conn
            conn.client.close()
        return None

    async def _release(self, server: _Server, conn: _Connection) -> None:
        if self.reuse and not self._closed and conn.client.is_connected:
            server.idle.append(conn)
        else:
            # Still inside the server's slot, so quitting connections count against the limit.
            await self._quit(conn.client)

    async def _open(self, config: SmtpConfig) -> _Connection:
        if self._local_hostname is None:
            # aiosmtplib would look the FQDN up on every connect; once per pool is enough.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        tls_context = None
        if config.use_tls or config.start_tls:
            tls_context = await self._client_tls_context()
        client = _Client(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            local_hostname=self._local_hostname,
            timeout=self.timeout_seconds,
            use_tls=config.use_tls,
            # Explicit: False means no STARTTLS at all (aiosmtplib's None would try it).
            start_tls=config.start_tls and not config.use_tls,
            validate_certs=self.validate_certs,
            tls_context=tls_context,
        )
        await client.connect()  # connect, EHLO, STARTTLS/TLS and AUTH as configured
        self.connections_opened += 1
        now = time.monotonic()
        return _Connection(client=client, opened_at=now, last_used=now)

    async def _client_tls_context(self) -> ssl.SSLContext:
        """One client TLS context per pool.

        aiosmtplib would build one per connection, loading the system CA store each time
        (tens of milliseconds of CPU); the context is safe to share between connections.
        """
        if self._tls_context is None:
            self._tls_context = await asyncio.to_thread(
                _build_tls_context, validate_certs=self.validate_certs
            )
        return self._tls_context

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        if not client.is_connected:
            return
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            client.close()


def _build_tls_context(*, validate_certs: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
