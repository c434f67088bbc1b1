"""What a run is: the roles (Policy, Judge), the pipeline that drives records through the
sample and judge phases, the sidecar and manifest that make it resumable, shards,
progress and signals; and a session (`session.Session`), the long-lived form that serves
records one at a time with engines loaded once (what `bon serve` holds).

May import `bon.engines`, `bon.tournament`, `bon.io`, config, errors and tasks; never a
view or the command line. No Rich here: a library run with no terminal never loads it
(`progress` imports Rich's bar only when it draws one).
"""
