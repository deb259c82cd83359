"""The search index of the history (``traces.search_index``), filled from the traces there are."""

from django.db import migrations

from traces import search_index


def add_index(apps, schema_editor):
    search_index.create(schema_editor)


def drop_index(apps, schema_editor):
    search_index.drop(schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("traces", "0010_rollups"),
    ]

    operations = [
        migrations.RunPython(add_index, drop_index),
    ]
