"""Server-rendered HTML pages (the playground, the unsubscribe page): templates from
``hub/templates`` through aiohttp-jinja2, autoescaped, failing loudly on a missing value."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

import hub

TEMPLATES_DIR = Path(hub.__file__).resolve().parent / "templates"


def setup_templates(app: web.Application, key: web.AppKey[jinja2.Environment]) -> None:
    """A template environment under ``key`` (each page family keeps its own)."""
    aiohttp_jinja2.setup(
        app,
        app_key=key,
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        default_helpers=False,
        undefined=jinja2.StrictUndefined,
    )
