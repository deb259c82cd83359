from django.urls import path

from evals.pages import add_to_dataset, datasets, experiments, runs

app_name = "evals"

urlpatterns = [
    # The datasets: their items, and experiments run on them from the page, with their progress.
    path("datasets/", datasets.dataset_list, name="datasets"),
    path("datasets/add-traces/", add_to_dataset.add_to_dataset, name="add_traces"),
    path("datasets/<int:pk>/", datasets.dataset_detail, name="dataset"),
    path("datasets/<int:pk>/import", datasets.dataset_import, name="dataset_import"),
    path("datasets/<int:pk>/items/", datasets.item_add, name="item_add"),
    path("datasets/<int:pk>/items/<int:item_pk>/", datasets.item_edit, name="item"),
    path("datasets/<int:pk>/items/<int:item_pk>/delete", datasets.item_delete, name="item_delete"),
    path("datasets/<int:pk>/experiments/", runs.experiment_run, name="experiment_run"),
    # Experiments: one, two side by side, each dataset's accuracy for the dashboard, and the
    # progress of one running.
    path("experiments/<int:experiment_id>/", experiments.experiment, name="experiment"),
    path("experiments/<int:pk>/progress.json", runs.experiment_progress, name="experiment_progress"),
    path("experiments/compare/", experiments.compare, name="compare"),
    path("experiments/accuracy.json", experiments.accuracy, name="accuracy"),
]
