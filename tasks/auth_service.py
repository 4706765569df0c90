"""Client of the CRM auth service: tenant SMTP settings and email templates, cached briefly.

Email workers ask for the same tenant's settings and template for every recipient of a
campaign, so answers (including "not configured") are cached for a short TTL and concurrent
asks for the same thing share one request. Failures that may heal (connection errors,
timeouts, 5xx, 429) are never cached: the task retries later and the email is not lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from yarl import URL

from tasks.templates import EmailTemplate

__all__ = [
    "AuthServiceClient",
    "AuthServiceError",
    "AuthServiceUnavailable",
    "NotConfigured",
    "SmtpConfig",
]

log = logging.getLogger(__name__)

#: Larger answers are refused (a template is HTML, not a mailbox).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: Cached answers kept at most; expired ones are dropped first.
MAX_CACHE_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """One tenant's SMTP settings. The password never shows in ``repr`` (nor so in logs)."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    use_tls: bool
    start_tls: bool
    from_email: str
    from_name: str | None


class AuthServiceUnavailable(Exception):
    """Transient: unreachable, timed out, 5xx or 429. Retry later."""


class NotConfigured(Exception):
    """404: the tenant has no SMTP settings, or no template under that key."""


class AuthServiceError(Exception):
    """Permanent: the service answered something unusable; the message says what."""


# --- response shapes ------------------------------------------------------------------------


def _no_line_breaks(value: str | None) -> str | None:
    # These end up in SMTP commands and headers, where a CR/LF would inject new ones.
    if value is not None and ("\r" in value or "\n" in value):
        raise ValueError("must not contain line breaks")
    return value


class _SmtpConfigBody(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    # Required, not defaulted: guessing "no TLS" would send credentials in clear.
    use_tls: bool
    start_tls: bool
    from_email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    from_name: str | None = None

    @field_validator("host", "username", "from_email", "from_name")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        return _no_line_breaks(value)

    @field_validator("username", "password", "from_name")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        # CRM forms send "" for a field left blank.
        return value or None

    @model_validator(mode="after")
    def _one_tls_mode(self) -> _SmtpConfigBody:
        if self.use_tls and self.start_tls:
            raise ValueError("use_tls (implicit TLS) and start_tls cannot both be set")
        return self


class _TemplateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    subject: str
    html: str
    text: str | None = None


def _describe(error: ValidationError) -> str:
    # Built from locations and messages only: pydantic's own str() quotes input values,
    # which for an SMTP config can include the password.
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    )


# --- the client -----------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Entry(Generic[V]):
    expires_at: float
    value: V | None = None
    not_configured: str | None = None  # the cached 404, as its message


class _CachedLoader(Generic[K, V]):
    """A TTL cache in front of ``fetch`` where concurrent misses for one key share one fetch."""

    def __init__(
        self,
        fetch: Callable[[K], Awaitable[V]],
        *,
        ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[K, _Entry[V]] = {}
        self._inflight: dict[K, asyncio.Task[V]] = {}
        # Bumped by invalidate(): a fetch that started before must not store its answer.
        self._generation = 0

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires_at > self._clock():
                if entry.not_configured is not None:
                    raise NotConfigured(entry.not_configured)
                return cast(V, entry.value)
            del self._entries[key]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._load(key, self._generation))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # shield: one caller giving up (cancelled) must not cancel the fetch the others await.
        return await asyncio.shield(task)

    async def _load(self, key: K, generation: int) -> V:
        try:
            value = await self._fetch(key)
        except NotConfigured as exc:
            self._store(key, generation, _Entry(0.0, not_configured=str(exc)))
            raise
        self._store(key, generation, _Entry(0.0, value=value))
        return value

    def _store(self, key: K, generation: int, entry: _Entry[V]) -> None:
        if self._ttl <= 0 or generation != self._generation:
            return
        now = self._clock()
        entry.expires_at = now + self._ttl
        if len(self._entries) >= MAX_CACHE_ENTRIES:
            for stale in [k for k, e in self._entries.items() if e.expires_at <= now]:
                del self._entries[stale]
            while len(self._entries) >= MAX_CACHE_ENTRIES:  # still full: oldest first
                del self._entries[next(iter(self._entries))]
        self._entries[key] = entry

    def _forget(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a fetch nobody awaits any more stays quiet

    def invalidate(self, matches: Callable[[K], bool] | None = None) -> None:
        self._generation += 1
        for key in [k for k in self._entries if matches is None or matches(k)]:
            del self._entries[key]
        # Callers arriving now start a fresh fetch instead of joining one that began before.
        for key in [k for k in self._inflight if matches is None or matches(k)]:
            del self._inflight[key]


def _segment(value: str, what: str) -> str:
    """One URL path segment: every odd character quoted, "." and ".." refused."""
    if value in ("", ".", ".."):
        # Quoting leaves dots alone, and a ".." segment would address another endpoint.
        raise NotConfigured(f"{what} {value!r} is not a valid identifier")
    return quote(value, safe="")


class AuthServiceClient:
    """Reads tenant SMTP settings and email templates from the CRM auth service."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        cache_ttl_seconds: float = 60.0,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._smtp: _CachedLoader[str, SmtpConfig] = _CachedLoader(
            self._fetch_smtp_config, ttl=cache_ttl_seconds, clock=clock
        )
        self._templates: _CachedLoader[tuple[str, str], EmailTemplate] = _CachedLoader(
            self._fetch_email_template, ttl=cache_ttl_seconds, clock=clock
        )

    async def smtp_config(self, tenant_id: str) -> SmtpConfig:
        """The tenant's SMTP settings; :class:`NotConfigured` if it has none."""
        return await self._smtp.get(tenant_id)

    async def email_template(self, tenant_id: str, template_key: str) -> EmailTemplate:
        """The tenant's template ``template_key``; :class:`NotConfigured` if there is none."""
        return await self._templates.get((tenant_id, template_key))

    def invalidate(self, tenant_id: str | None = None) -> None:
        """Forget cached answers for one tenant, or for all of them."""
        if tenant_id is None:
            self._smtp.invalidate()
            self._templates.invalidate()
        else:
            self._smtp.invalidate(lambda key: key == tenant_id)
            self._templates.invalidate(lambda key: key[0] == tenant_id)

    async def _fetch_smtp_config(self, tenant_id: str) -> SmtpConfig:
        path = f"/api/tenants/{_segment(tenant_id, 'tenant id')}/smtp-config/"
        body = await self._get_json(path, missing=f"tenant {tenant_id!r} has no SMTP config")
        try:
            config = _SmtpConfigBody.model_validate(body)
        except ValidationError as exc:
            raise AuthServiceError(
                f"unusable SMTP config for tenant {tenant_id!r}: {_describe(exc)}"
            ) from None
        return SmtpConfig(
            host=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.use_tls,
            start_tls=config.start_tls,
            from_email=config.from_email,
            from_name=config.from_name,
        )

    async def _fetch_email_template(self, key: tuple[str, str]) -> EmailTemplate:
        tenant_id, template_key = key
        path = (
            f"/api/tenants/{_segment(tenant_id, 'tenant id')}"
            f"/email-templates/{_segment(template_key, 'template key')}/"
        )
        body = await self._get_json(
            path, missing=f"tenant {tenant_id!r} has no email template {template_key!r}"
        )
        try:
            template = _TemplateBody.model_validate(body)
        except ValidationError as exc:
            raise AuthServiceError(
                f"unusable email template {template_key!r} for tenant {tenant_id!r}: "
                f"{_describe(exc)}"
            ) from None
        return EmailTemplate(subject=template.subject, html=template.html, text=template.text)

    async def _get_json(self, path: str, *, missing: str) -> Any:
        """GET ``path`` and decode it, mapping every outcome onto the three exceptions."""
        # encoded=True: the path is already quoted; yarl must not decode %2F or normalise it.
        url = URL(self._base_url + path, encoded=True)
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                status = response.status
                if status == 404:
                    raise NotConfigured(missing)
                if status in (408, 429) or status >= 500:
                    raise AuthServiceUnavailable(f"auth service answered {status} for {path}")
                if not 200 <= status < 300:
                    raise AuthServiceError(f"auth service answered {status} for {path}")
                raw = await _read_limited(response, path)
        except aiohttp.InvalidURL as exc:
            # A broken AUTH_SERVICE_URL does not heal by retrying.
            raise AuthServiceError(f"invalid auth service URL: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("auth service unreachable for %s: %s", path, type(exc).__name__)
            raise AuthServiceUnavailable(
                f"auth service unreachable for {path}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AuthServiceError(f"auth service sent invalid JSON for {path}") from None


async def _read_limited(response: aiohttp.ClientResponse, path: str) -> bytes:
    if response.content_length is not None and response.content_length > MAX_RESPONSE_BYTES:
        raise AuthServiceError(f"auth service answer for {path} is larger than allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise AuthServiceError(f"auth service answer for {path} is larger than allowed")
        chunks.append(chunk)
    return b"".join(chunks)
