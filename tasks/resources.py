"""What the email task needs, created once per worker process (or per serve process on the
embedded defaults) and handed to tasks through the broker's state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import engine_for, make_session_factory
from hub.settings import Settings
from tasks.auth_service import AuthServiceClient, SmtpConfig
from tasks.leases import LeaseKeeper
from tasks.smtp import SmtpPool


@dataclass
class EmailResources:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    auth_service: AuthServiceClient | None
    smtp: SmtpPool
    platform_smtp: SmtpConfig | None
    leases: LeaseKeeper


def platform_smtp_config(settings: Settings) -> SmtpConfig | None:
    """The platform's own SMTP server, used for tenants that have none."""
    if (
        not settings.smtp_fallback_configured
        or settings.smtp_host is None
        or settings.smtp_from_email is None
    ):
        return None
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        use_tls=settings.smtp_use_tls,
        start_tls=settings.smtp_start_tls,
        from_email=settings.smtp_from_email,
        from_name=None,
    )


@asynccontextmanager
async def email_resources(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    http: aiohttp.ClientSession | None = None,
) -> AsyncIterator[EmailResources]:
    """Build the resources; ``sessions``/``http`` are reused when the caller has them."""
    engine = None
    if sessions is None:
        engine = engine_for(settings)
        sessions = make_session_factory(engine)
    own_http = http is None
    client_session = aiohttp.ClientSession() if http is None else http
    smtp = SmtpPool(
        max_connections_per_server=settings.smtp_max_connections,
        timeout_seconds=settings.smtp_timeout_seconds,
    )
    auth = (
        AuthServiceClient(
            settings.auth_service_url,
            client_session,
            cache_ttl_seconds=settings.auth_service_cache_seconds,
        )
        if settings.auth_service_url
        else None
    )
    leases = LeaseKeeper(sessions=sessions, lease_seconds=settings.email_lease_seconds)
    leases.start()
    try:
        yield EmailResources(
            settings=settings,
            sessions=sessions,
            auth_service=auth,
            smtp=smtp,
            platform_smtp=platform_smtp_config(settings),
            leases=leases,
        )
    finally:
        await leases.close()
        await smtp.close()
        if own_http:
            await client_session.close()
        if engine is not None:
            await engine.dispose()
