"""How a job's render is followed, split into what is decided and what is done.

- ``decide.py``: every decision of a tracker (pure, no I/O, the time is an input): given its
  state and what it just observed, the next state and the actions to take. A job's tracking
  state changes there and nowhere else.
- ``attempt.py``: the decisions of one render attempt (pure too): its placement, stream,
  investigation, backoff, stall and progress, until it ends with an outcome (a verdict, the
  render lost, given up, the job gone) that ``decide`` turns into the job's transition. A job
  follows one attempt at a time; a split job will follow one per part.
- ``observations.py``: everything a tracker can learn (a render event, a silent stream, an RPC
  error, a store refusal, a timer, ...).
- ``actions.py``: everything a tracker can do (call Render, write progress, fail the job, wait,
  stop, ...).

- ``runner.py``: ``JobTracker``, which performs the actions (gRPC calls, store writes, timers)
  and feeds back what it observed; it decides nothing.
- ``supervisor.py``: ``RenderSupervisor``, a tracker per job this replica drives, tracked again
  after a crash, stopped on shutdown, and the release of renders that are no longer wanted.
"""
