"""Fleet jobs on PostgreSQL through Procrastinate: ``queue init``, ``worker`` and ``--queue URL``.

We do not write a queue. Procrastinate's semantics are the ones a fix needs:

* a job's ``lock`` is ``host:NAME``, so two jobs for one host never run at once, whichever
  workers hold them (the host's own flock stays the backstop);
* a ``queueing_lock`` refuses a second job while the first still waits (``AlreadyEnqueued``): an
  alert delivered twice is one job;
* queues route jobs by zone: ``remediate`` for hosts with no ``remediate_zone``, ``remediate@ZONE``
  for the others, and a worker takes one zone's queue, so it sits next to its hosts.

Procrastinate keeps no task results, so a worker writes each job's HostResult to the table
``remediate_results`` in the same database (``queue init`` creates it), and whoever enqueued
waits on it. A worker killed mid-job leaves its job ``doing`` under a heartbeat that stops;
every worker looks for such stalled jobs and retries each once (at its next session the host's
helper recovers what the journal says was half made), then marks it failed.

schema (the tables, the connection, the queues' names, ``queue init``) → producer (enqueue, wait)
→ worker (run jobs, record results, recover stalled jobs). The service's side (its dispatcher on the
queue, its task on a worker) is remediate.serve.queued.

Imported only by the commands that use the queue: ``pip install 'remediate[queue]'``.
"""
