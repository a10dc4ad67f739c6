"""Hot-path statements: SQLAlchemy Core statements compiled once per dialect and run on the
driver's cursor, inside the caller's SQLAlchemy transaction.

Every authentication runs about a dozen statements. Through ``Connection.execute`` each costs
SQLAlchemy's per-execution work (execution context, result object, row processors), which
measured more than the statement itself and a quarter of the server's CPU per flow
(bench/loadgen.py --profile). The statements stay SQLAlchemy Core -- written once, portable,
compiled by the dialect -- and only their execution skips the layers the hot path doesn't need.

This is safe for the tables it is used on because their columns need no type processing:
integers, strings and bytes go to and come from both drivers (sqlite3, psycopg) as they are,
and no hot-path INSERT relies on a Python-side column default.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping
from typing import Any, Generic, cast

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from typing_extensions import TypeVar

#: the typed record a statement's rows are made into (a NamedTuple class; Any: a plain one)
R = TypeVar("R", default=Any)


class Prepared(Generic[R]):
    """One statement of the hot path. Parameters are given by bind name, as to
    ``Connection.execute``; an INSERT is compiled for the set of columns it is given.

    ``row``: the NamedTuple its rows become, whose fields must be the statement's columns in
    order (checked here, once); without it, an untyped named tuple."""

    __slots__ = ("_plans", "_row", "statement")

    def __init__(self, statement: Executable, row: type[R] | None = None) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}
        self._row: Any = row
        columns = getattr(statement, "exported_columns", None)  # SELECT, or DML's RETURNING
        if row is not None:
            fields = getattr(row, "_fields", None)
            if columns is None or tuple(columns.keys()) != fields:
                raise TypeError(
                    f"{row.__name__} fields {fields} are not the statement's "
                    f"columns {None if columns is None else tuple(columns.keys())}"
                )
        elif columns:
            self._row = namedtuple("Record", columns.keys(), rename=True)  # type: ignore[misc]

    def _plan(self, conn: Connection, params: Mapping[str, Any]) -> _Plan:
        # for_executemany: no implicit RETURNING of an autoincrement key (PostgreSQL would add
        # one to the audit INSERT), since nothing here reads it; explicit RETURNING stays
        compiled = cast(
            SQLCompiler,
            self.statement.compile(  # type: ignore[attr-defined]
                dialect=conn.dialect, column_keys=list(params), for_executemany=True
            ),
        )
        plan = _Plan(compiled, params)
        self._plans[(conn.dialect.name, tuple(params))] = plan
        return plan

    def _execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        plan = self._plans.get((conn.dialect.name, tuple(params))) or self._plan(conn, params)
        args = plan.args(params)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            cursor.execute(plan.sql, args)
        except dbapi_error as exc:  # as SQLAlchemy raises it (IntegrityError, ...)
            raise DBAPIError.instance(plan.sql, args, exc, dbapi_error) from exc
        return cursor

    def first(self, conn: Connection, params: Mapping[str, Any]) -> R | None:
        """The first row, or None."""
        found = self._execute(conn, params).fetchone()
        return None if found is None else cast(R, self._row._make(found))

    def one(self, conn: Connection, params: Mapping[str, Any]) -> R:
        """The first row; LookupError when there is none."""
        found = self.first(conn, params)
        if found is None:
            raise LookupError("no row")
        return found

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[R]:
        """Every row."""
        make = self._row._make
        return [make(found) for found in self._execute(conn, params).fetchall()]

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None."""
        found = self._execute(conn, params).fetchone()
        return None if found is None else found[0]

    def rowcount(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run an INSERT, UPDATE or DELETE; how many rows it changed."""
        count: int = self._execute(conn, params).rowcount
        return count


class _Plan:
    """A compiled statement and how to build its driver arguments from the caller's
    parameters: the values the statement itself carries (literals in a WHERE clause) are
    taken once from SQLAlchemy's ``construct_params``; the rest come straight from the
    caller's mapping by bind name."""

    __slots__ = ("_constants", "_names", "sql")

    def __init__(self, compiled: SQLCompiler, params: Mapping[str, Any]) -> None:
        self.sql: str = compiled.string
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise TypeError(
                f"Prepared cannot run {self.sql!r}: SQLAlchemy renders some of "
                "its parameters per execution (IN lists, literal_execute); use "
                "Connection.execute"
            )
        if compiled.escaped_bind_names:
            raise TypeError(
                f"Prepared cannot run {self.sql!r}: parameter names "
                f"{sorted(compiled.escaped_bind_names)} are renamed for the "
                "driver; name them with letters, digits and underscores"
            )
        bound = compiled.construct_params(params)
        self._names: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )
        self._constants = {name: value for name, value in bound.items() if name not in params}

    def args(self, params: Mapping[str, Any]) -> Any:
        bound = {**self._constants, **params} if self._constants else params
        if self._names is None:
            return bound
        return tuple([bound[name] for name in self._names])


__all__ = ["Prepared"]
