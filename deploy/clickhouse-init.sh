#!/bin/bash
# Run once by the ClickHouse image at its first start (/docker-entrypoint-initdb.d): the
# database and the least-privilege users of docs/security.md, passwords from the environment.
# tests/tests/compose.rs checks that these GRANTs are docs/security.md's, line for line.
set -euo pipefail
# The placeholders of .env.example are no passwords: refuse to create users with them.
for var in CLICKHOUSE_PASSWORD CLICKHOUSE_SINK_PASSWORD CLICKHOUSE_ANALYST_PASSWORD; do
  case "${!var}" in change-me*) echo "clickhouse-init: $var is the placeholder from .env.example: set a password of your own" >&2; exit 1;; esac
done
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE DATABASE IF NOT EXISTS qoo10;
CREATE USER IF NOT EXISTS qoo10_sink IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_SINK_PASSWORD}';
GRANT SELECT, INSERT, CREATE TABLE, CREATE VIEW, DROP VIEW, ALTER ADD COLUMN, ALTER DELETE ON qoo10.* TO qoo10_sink;
CREATE USER IF NOT EXISTS qoo10_analyst IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_ANALYST_PASSWORD}';
GRANT SELECT ON qoo10.orders TO qoo10_analyst;
GRANT SELECT ON qoo10.order_versions TO qoo10_analyst;
GRANT SELECT ON qoo10.order_carts TO qoo10_analyst;
GRANT SELECT ON qoo10.alert_acks TO qoo10_analyst;
GRANT SELECT ON qoo10.alerts TO qoo10_analyst;
GRANT SELECT ON qoo10.oms_expectations TO qoo10_analyst;
GRANT SELECT ON qoo10.commands TO qoo10_analyst;
GRANT SELECT ON qoo10.daily_sales TO qoo10_analyst;
GRANT SELECT ON qoo10.orders_by_status TO qoo10_analyst;
GRANT SELECT ON qoo10.open_alerts TO qoo10_analyst;
GRANT SELECT ON qoo10.erasures TO qoo10_analyst;
SQL
