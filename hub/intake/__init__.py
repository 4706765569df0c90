"""Event intake: CRM modules' events (Kafka, REST, RabbitMQ) become notifications and emails.

Every source decodes with :mod:`hub.intake.envelope` and applies with
:class:`hub.intake.apply.EventApplier`; only the transport differs.
"""
