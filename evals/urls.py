from django.urls import path

from evals.pages import add_to_dataset, experiments

app_name = "evals"

urlpatterns = [
    # Experiments: one, two side by side, and each dataset's accuracy for the dashboard; adding
    # traces to a dataset from the history and the trace page.
    path("experiments/<int:experiment_id>/", experiments.experiment, name="experiment"),
    path("experiments/compare/", experiments.compare, name="compare"),
    path("experiments/accuracy.json", experiments.accuracy, name="accuracy"),
    path("datasets/add-traces/", add_to_dataset.add_to_dataset, name="add_traces"),
]
