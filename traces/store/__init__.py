"""The trace store: everything that writes the history.

``projection`` computes a trace's rows from its events (the one place that does); ``writer`` is
the commit path that applies it and writes rows and events in a transaction; ``sinks`` runs the
writer on a thread or in the writer process; ``event_store`` numbers a process's events, sends
them in batches and delivers what was stored; ``recorder`` is how the agent and everything else
add events to a trace; ``liveness`` closes the runs of processes that died; ``transfer`` and
``retention`` import, export and prune.
"""
