"""Raw SQL written once with `?` placeholders, run on SQLite (sqlite3's qmark style) or PostgreSQL
(psycopg's `%s`). No other store module is imported here: every store module may use it; nor is
SQLAlchemy at import time (the search path's plain sqlite3 reads import this module's users)."""
from __future__ import annotations

POSTGRES = "postgresql"


def driver_sql(dialect_name: str, sql: str, *, with_params: bool = True) -> str:
    """Raw SQL written with `?` placeholders, for the driver of `dialect_name` (psycopg takes `%s`, and
    a literal % doubled when parameters are bound). Our statements hold no `?` inside string literals."""
    if dialect_name != POSTGRES or not with_params:
        return sql
    return sql.replace("%", "%%").replace("?", "%s")


def run_sql(session_or_connection, sql: str, params=None):
    """exec_driver_sql with `?` placeholders, on either database."""
    from sqlalchemy.orm import Session

    connection = session_or_connection.connection() if isinstance(session_or_connection, Session) else session_or_connection
    if not params:
        return connection.exec_driver_sql(driver_sql(connection.dialect.name, sql, with_params=False))
    return connection.exec_driver_sql(driver_sql(connection.dialect.name, sql), params)
