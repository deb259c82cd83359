"""Live delivery: stored events to the sockets that follow them, in this process (``hub``,
``delivery``) and the others (``bus`` over the channel ``layer``); replays; and the agent runs a
process starts for its sessions (``sessions``, ``agent_runs``)."""
