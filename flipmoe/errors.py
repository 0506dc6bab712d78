"""Errors raised for bad user input.

Every error a user can cause by handing flipmoe a bad file or option is a `FlipmoeInputError`:
it names the file, the column and the row where that makes sense, and says what to do. The CLI
turns it into a one-line message and exit code 2, never a stack trace.
"""

from __future__ import annotations

from pathlib import Path


class FlipmoeInputError(ValueError):
    """Bad input: a file, column, row or option that flipmoe cannot use as given."""

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        column: str | None = None,
        row: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.column = column
        self.row = row
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.column:
            where.append(f"column '{self.column}'")
        if self.row is not None:
            where.append(f"row {self.row}")
        text = f"{', '.join(where)}: {self.problem}" if where else self.problem
        if self.hint:
            text += f" ({self.hint})"
        return text
