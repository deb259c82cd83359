#!/bin/sh
# The container's start sequence (the Dockerfile's CMD); CI runs the same script outside Docker.
# No --proxy-headers: daphne's would believe X-Forwarded-For from anybody. The application takes
# the client from the proxies in TRACE_TRUSTED_PROXIES only (traces/proxies.py).
set -eu
python manage.py migrate --noinput
exec daphne -b "${BIND:-0.0.0.0}" -p "${PORT:-8000}" tracesite.asgi:application
