from django.apps import AppConfig


class TracesConfig(AppConfig):
    name = "traces"
    verbose_name = "Traces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from traces import checks, compat  # noqa: F401 - importing checks registers them

        compat.warn_if_broken()  # a library upgrade that switched a hook off is said at start-up
        compat.plain_autobahn_debug_lines()
