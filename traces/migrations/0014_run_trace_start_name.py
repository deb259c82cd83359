from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("traces", "0013_trace_duration_index"),
    ]

    # run_trace_start_idx made wider, not one more index: the wider one is built under another
    # name first (MariaDB keeps the trace key's column indexed, so the old one can only go once
    # another index starts with it), then takes the old one's name.
    operations = [
        migrations.AddIndex(
            model_name="run",
            index=models.Index(fields=["trace", "start_time", "id", "name"], name="run_trace_start_name_idx"),
        ),
        migrations.RemoveIndex(model_name="run", name="run_trace_start_idx"),
        migrations.RenameIndex(model_name="run", new_name="run_trace_start_idx", old_name="run_trace_start_name_idx"),
    ]
