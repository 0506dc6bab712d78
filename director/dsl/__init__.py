"""The runbook language: parse, print, validate against the actors, compile to a `Plan`.

```python
from director.dsl import load_plan
plan = load_plan(text)          # RunbookError(message, line, column) when it is not a valid runbook
print(plan.runbook)             # the canonical text
```
"""

from __future__ import annotations

from director.dsl.plan import Plan, assignable, compile_runbook
from director.dsl.syntax import Runbook, RunbookError, format_runbook, grammar_text, parse

__all__ = ["Plan", "Runbook", "RunbookError", "assignable", "compile_runbook", "format_runbook", "grammar_text",
           "load_plan", "parse"]


def load_plan(text: str, *, source: str | None = None) -> Plan:
    """Parse and validate runbook text against the registered actors."""
    from director.actors.base import registry

    return compile_runbook(parse(text, source=source), registry(), source=source)
