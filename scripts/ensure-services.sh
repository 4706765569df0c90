#!/usr/bin/env bash
# Start PostgreSQL and Redis on 127.0.0.1 when they do not answer (CI machines and fresh
# developer boxes of the python-svc kind have both installed). Prints what it did.
set -uo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  for _ in $(seq 1 50); do answers "$1" && return 0; sleep 0.2; done
  return 1
}

if ! answers 5432; then
  echo "ensure-services: PostgreSQL not answering on 5432, starting it"
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_for 5432 || echo "ensure-services: PostgreSQL still not answering; the tests will say so" >&2
fi

if ! answers 6379; then
  echo "ensure-services: Redis not answering on 6379, starting it"
  if command -v redis-server >/dev/null; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  wait_for 6379 || echo "ensure-services: Redis still not answering; the tests will say so" >&2
fi
if ! answers 5672; then
  # RabbitMQ takes ~10 s to come up.
  echo "ensure-services: RabbitMQ not answering on 5672, starting it"
  command -v rabbitmq-server >/dev/null && { rabbitmq-server -detached || true; }
  for _ in $(seq 1 150); do answers 5672 && break; sleep 0.2; done
  answers 5672 || echo "ensure-services: RabbitMQ still not answering; the tests will say so" >&2
fi
exit 0
