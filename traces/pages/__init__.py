"""The HTML pages (live, history, trace detail, compare, dashboard), ``/health`` and ``/metrics``,
and the static files middleware."""
