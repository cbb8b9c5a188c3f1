"""The web console at ``/console``: the jobs page, the job page, sign-in (routes.py)."""
