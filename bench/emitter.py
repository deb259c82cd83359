"""tracesite's real ASGI application with the agent replaced by ``ScriptedAgent``.

    daphne bench.emitter:application

Everything else is the product: the consumer, the recorder's group commit, the channel layer,
the settings. Only what the agent does between events (model calls, SQL) is taken out.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")

# isort: off
from tracesite.asgi import application  # first: sets Django up
from traces.live import agent_runs as runner
from bench.scripted import ScriptedAgent

# isort: on

runner.build_agent = lambda model=None, max_steps=None: ScriptedAgent()

__all__ = ["application"]
