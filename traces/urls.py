from django.urls import path

from traces import views

app_name = "traces"

urlpatterns = [
    path("", views.live, name="live"),
    path("traces/", views.trace_list, name="list"),
    path("traces/<uuid:trace_id>/", views.trace_detail, name="detail"),
    path("traces/<uuid:trace_id>/export.json", views.trace_export, name="export"),
    path("health", views.health, name="health"),
    path("metrics", views.metrics, name="metrics"),
]
