from django.apps import AppConfig


class TracesConfig(AppConfig):
    name = "traces"
    verbose_name = "Traces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import pre_delete

        from traces import checks, compat  # noqa: F401 - importing checks registers them
        from traces.store import rollups

        # A deleted user's traces become nobody's: the dashboard's sums of their hours are stale.
        pre_delete.connect(
            lambda sender, instance, **kwargs: rollups.mark_owner_stale(instance.pk),
            sender=get_user_model(),
            weak=False,
            dispatch_uid="traces.rollups.deleted_owner",
        )
        compat.warn_if_broken()  # a library upgrade that switched a hook off is said at start-up
        compat.plain_autobahn_debug_lines()
