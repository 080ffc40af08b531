"""The chaos suite: real worker processes and a real Redis, faulted under load.

- `tests.chaos.processes`: the processes (a private redis-server, ``hostedjobs worker``
  processes) and the faults injected into them;
- `tests.chaos.ledger`: what really ran, recorded outside Redis, and its analysis;
- `tests.chaos.scenarios`: the scenarios and their checks;
- `tests.chaos.app`: the host the worker processes run.

``tests/chaos/test_chaos.py`` runs the short mode in the normal pytest run;
``python -m tests.chaos --long`` (``make chaos``) runs the long mode and prints the table of
docs/reliability.md.
"""
