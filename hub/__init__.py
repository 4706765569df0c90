"""NotifyHub: realtime notifications and messaging hub for multi-tenant CRMs."""

__version__ = "0.1.0"
