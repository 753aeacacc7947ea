"""Alembic environment: the server's models are the target; the connection comes from ``db.upgrade``
(or, for ``alembic`` on the command line, from ``sqlalchemy.url``)."""

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

from skybench.server.db import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
