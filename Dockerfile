# syntax=docker/dockerfile:1
# Build stage: wheels for everything, including mysqlclient (needs the client headers).
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential default-libmysqlclient-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.txt requirements-mysql.txt ./
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements-mysql.txt

# Runtime stage: only the shared client library, a non-root user, no secrets.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 tracesite
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
WORKDIR /app
COPY --chown=tracesite:tracesite . .
ENV PYTHONUNBUFFERED=1 DJANGO_DEBUG=false TRACESITE_DATA_DIR=/app/var STATIC_ROOT=/app/staticfiles
# collectstatic needs settings to load; these build-time values are not kept in the image's env.
RUN DJANGO_SECRET_KEY=collectstatic-only DJANGO_ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
 && mkdir -p /app/var && chown tracesite:tracesite /app/var
USER tracesite
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health || exit 1
CMD ["deploy/start.sh"]
