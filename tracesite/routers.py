"""Keeps Django's models out of the agent's database, and the agent's data out of Django's."""


class AgentDatabaseRouter:
    alias = "agent"

    def db_for_read(self, model, **hints):
        return "default"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db != self.alias
