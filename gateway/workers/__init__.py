"""Past one core (``--workers N``, N > 1): N data-plane processes in front of one control
process, as ``docs/scaling.md`` section 6 lays out.

- ``group``: the control process starts the data planes, restarts one that dies, relays
  SIGHUP and stops them all.
- ``hub``: the control process's end of each data plane's link: it tells them which models
  serve, answers their misses (one load however many planes ask), forwards calls and
  collects hits and metrics.
- ``plane``: a data plane: the front on the shared port, its upstream pool to Triton, and a
  replica of the ready models (``replica``) with its own pins.
- ``drains``: an eviction's second phase: no unload while any plane has the model pinned.
- ``link`` and ``wire``: the messages (JSON lines on a socket pair) and how models, errors
  and replies travel in them.
"""
