from django.urls import path

from traces import api
from traces.pages import tree, views

app_name = "traces"

urlpatterns = [
    path("", views.live, name="live"),
    path("traces/", views.trace_list, name="list"),
    path("traces/compare/", views.trace_compare, name="compare"),
    path("traces/<uuid:trace_id>/", views.trace_detail, name="detail"),
    path("traces/<uuid:trace_id>/export.json", views.trace_export, name="export"),
    path("traces/<uuid:trace_id>/feedback", views.trace_feedback, name="feedback"),
    path("api/traces/<uuid:trace_id>/runs", tree.runs, name="tree_runs"),
    path("api/traces/<uuid:trace_id>/runs/<uuid:run_id>", tree.run_detail, name="tree_run"),
    path("api/traces/<uuid:trace_id>/search", tree.search, name="tree_search"),
    path("api/traces/<uuid:trace_id>/events", tree.events, name="tree_events"),
    path("api/traces/<str:trace_id>/scores", api.trace_scores, name="scores"),
    path("sessions/<str:session_id>/", views.session_detail, name="session"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("health", views.health, name="health"),
    path("metrics", views.metrics, name="metrics"),
    # OTLP/HTTP's /v1/traces is answered before Django's handler: traces.receiver.OtlpEndpoint.
]
