"""JSON from outside (uploads, request bodies, imported files) parsed so that every problem is bad input.

`json.loads` alone lets untrusted text end in errors that are not `JSONDecodeError`: bytes that are not
UTF-8 (`UnicodeDecodeError`), nesting deeper than the interpreter's stack (`RecursionError`), integers
of more than 4300 digits (`ValueError`), and escaped lone UTF-16 surrogates (`"\\ud800"`), which parse
but fail much later, when the text is written as UTF-8. `parse_json` turns each into a
`JsonInputError` that says what is wrong.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from flipmoe.errors import FlipmoeInputError

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted; telemetry needs about a dozen levels."""

# Decoded UTF-8 text cannot hold a surrogate: one can only come from a `\uD800`-`\uDFFF` escape.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class JsonInputError(FlipmoeInputError):
    """JSON that cannot be used; `malformed` is True when the text is not JSON at all."""

    def __init__(self, problem: str, *, malformed: bool, line: int = 1) -> None:
        super().__init__(problem)
        self.malformed, self.line = malformed, line


def parse_json(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` for untrusted input: valid UTF-8, at most `max_depth` levels, text that is Unicode."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise JsonInputError(f"not UTF-8 text (byte {err.start})", malformed=True) from None
    else:
        text = data
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise JsonInputError(f"not valid JSON ({err.msg}: line {err.lineno} column {err.colno})",
                             malformed=True, line=err.lineno) from None
    except RecursionError:
        raise JsonInputError(f"JSON nested deeper than {max_depth} levels", malformed=False) from None
    except ValueError:  # int() refuses numbers beyond sys.get_int_max_str_digits()
        raise JsonInputError(f"JSON holds a number of more than {sys.get_int_max_str_digits()} digits",
                             malformed=False) from None
    check_json_value(value, max_depth=max_depth, check_text=bool(_SURROGATE_ESCAPE.search(text)))
    return value


def check_json_value(value: Any, *, max_depth: int = MAX_DEPTH, check_text: bool = True) -> None:
    """Refuse a parsed JSON value nested deeper than `max_depth`, or (with `check_text`) holding a lone
    surrogate; for values parsed elsewhere (a web framework's body parser)."""
    # Iterative, so that checking the depth cannot itself overflow the stack; json.loads makes only
    # plain dicts and lists, hence the exact type tests (the fastest, on millions of values).
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if type(node) is str:
            _check_text(node)
            continue
        if type(node) is not dict and type(node) is not list:
            continue
        if depth > max_depth:
            raise JsonInputError(f"JSON nested deeper than {max_depth} levels", malformed=False)
        if type(node) is dict:
            if check_text:
                for key in node:
                    _check_text(key)
            children: Any = node.values()
        else:
            children = node
        for child in children:
            if type(child) is dict or type(child) is list or (check_text and type(child) is str):
                stack.append((child, depth + 1))


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise JsonInputError(f"JSON text holds a lone UTF-16 surrogate (\\u{ord(text[err.start]):04x}); "
                             "strings must be valid Unicode", malformed=False) from None
