"""Alembic migrations (a package so that they install with the distribution)."""
