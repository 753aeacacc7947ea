"""The challenge server: teams submit privately over HTTP, a durable queue feeds the shared evaluation stage.

``config`` reads ``challenge.yaml``; ``db`` holds the state (SQLite in WAL mode by default, PostgreSQL by URL,
Alembic migrations in ``migrations/``); ``auth`` issues and checks tokens; ``storage`` receives, unpacks and
stores uploads; ``queue`` claims jobs with a lease and keeps the quotas; ``worker`` evaluates claimed jobs with
:func:`skybench.harness.evaluate.evaluate`; ``app`` is the FastAPI application (``skybench serve``).
"""
