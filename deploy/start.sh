#!/bin/sh
# The container's start sequence (the Dockerfile's CMD); CI runs the same script outside Docker.
set -eu
python manage.py migrate --noinput
exec daphne -b "${BIND:-0.0.0.0}" -p "${PORT:-8000}" --proxy-headers tracesite.asgi:application
