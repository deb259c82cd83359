#!/bin/sh
# Runs once, on the first start of the mysql container: the trace-history database, the agent's
# database, and a read-only user for the agent.
set -eu
mysql -uroot -p"$MYSQL_ROOT_PASSWORD" <<SQL
CREATE DATABASE IF NOT EXISTS tracesite CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'tracesite'@'%' IDENTIFIED BY '$MYSQL_TRACESITE_PASSWORD';
GRANT ALL PRIVILEGES ON tracesite.* TO 'tracesite'@'%';
-- The demo shop is loaded by "python manage.py seeddemo", which needs to write once:
GRANT ALL PRIVILEGES ON shop.* TO 'tracesite'@'%';
CREATE USER IF NOT EXISTS 'agent_reader'@'%' IDENTIFIED BY '$MYSQL_AGENT_PASSWORD';
GRANT SELECT, SHOW VIEW ON shop.* TO 'agent_reader'@'%';
FLUSH PRIVILEGES;
SQL
