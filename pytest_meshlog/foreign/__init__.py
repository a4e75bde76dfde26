"""What the backends that drive a foreign runtime (Monarch, Ray, torchrun) share.

Each of them runs the runtime in a process of its own that the harness can kill, and
judges its ranks from their fake_procs progress records and their pids rather than from
anything the runtime says. The pieces that are the same logic in every one of them live
here, one idea a module, so that a fix to one (a deadline, a kill) reaches all:

* `helper_link`: the driver's request/answer link to a helper process (one JSON command
  a line on its stdin, one JSON answer a line on a pipe of its own), and both its ends;
* `processes`: finding, checking and killing the processes a runtime started;
* `ranks`: the per-rank bookkeeping of kills, reported endings and the wait for them;
* `credit`: crediting an aggregating runtime's merged rows to ranks.

Nothing here imports a runtime: the pytest process stays free of them.
"""
