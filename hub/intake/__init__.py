"""Event intake: CRM modules' events (Kafka, REST, RabbitMQ) become notifications and emails.

Every source decodes with :mod:`hub.intake.envelope` and applies with
:func:`hub.intake.apply.apply_events`; only the transport differs.
"""
