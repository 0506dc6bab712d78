"""`flipmoe logs templates FILE...`: the template of every log line, as JSON lines."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING

from flipmoe.cli._output import emit
from flipmoe.errors import FlipmoeInputError

if TYPE_CHECKING:
    from flipmoe.toolkits.logs import LogParser

STDIN = "-"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("logs", help="log tools: template mining",
                                   description="Log tools over plain log files.")
    commands = parser.add_subparsers(dest="logs_command", metavar="SUBCOMMAND", required=True)
    templates = commands.add_parser(
        "templates", help="print the template of every log line as JSON lines",
        description="Mine templates (flipmoe's masking, then Brain-style grouping) from log messages, one per "
                    "line, and "
                    "write one JSON object per input line: {\"line\": n, \"template_id\": id, \"template\": "
                    "text}. n counts from 1 within each file; with several files each object also has "
                    "\"file\". Files are read in order and share one set of template ids. Lines are read and "
                    "mined in batches of 50,000; a template learnt from one batch keeps its id and text for "
                    "the lines of later batches that fit it.")
    templates.add_argument("files", nargs="+", metavar="FILE",
                           help="log file, one message per line ('-' for standard input; .gz is unpacked)")
    templates.add_argument("--out", metavar="FILE", help="write here instead of standard output "
                           "(written in full or not at all)")
    templates.add_argument("--max-templates", type=int, default=10_000, metavar="N",
                           help="keep at most N templates, dropping the least recently seen, so memory "
                                "stays bounded on any input; a dropped template that comes back gets a new "
                                "id (default %(default)s)")
    templates.set_defaults(handler=_templates)


def _templates(args: argparse.Namespace) -> int:
    from flipmoe.toolkits.logs import LogParser, LogParserConfig

    _check_inputs(args.files)
    if args.max_templates < 1:
        raise FlipmoeInputError(f"--max-templates must be at least 1, got {args.max_templates}")
    parser = LogParser(config=LogParserConfig(max_templates=args.max_templates))
    emit(args.out, lambda stream: _write(parser, args.files, stream))
    return 0


def _check_inputs(files: list[str]) -> None:
    """Fail before any output when an input cannot be read, so no run stops half-way for it."""
    if files.count(STDIN) > 1:
        raise FlipmoeInputError("standard input ('-') can be read only once")
    for name in files:
        if name == STDIN:
            continue
        path = Path(name)
        if not path.exists():
            raise FlipmoeInputError("file not found", path=path)
        if not path.is_file():
            raise FlipmoeInputError("not a regular file", path=path, hint="pass log files, not folders")


def _write(parser: LogParser, files: list[str], out: IO[str]) -> None:
    several = len(files) > 1
    for name in files:
        with ExitStack() as stack:
            stream = _stdin() if name == STDIN else stack.enter_context(_open(Path(name)))
            # Lines are mined in batches: the parser learns templates from a batch's statistics, and
            # keeps them for the batches after it.
            lines = _lines(stream, name, parser.config.max_message_chars)
            number = 0
            while batch := list(islice(lines, parser.config.batch_lines)):
                for parsed in parser.parse(batch):
                    number += 1
                    record = {"line": number, "template_id": parsed.template_id, "template": parsed.template}
                    out.write(json.dumps({"file": name, **record} if several else record) + "\n")


def log_line_batches(name: str, batch_lines: int, max_chars: int) -> Iterator[list[str]]:
    """The lines of a log file (or '-') in batches, each line without its break and cut to `max_chars`."""
    with ExitStack() as stack:
        stream = _stdin() if name == STDIN else stack.enter_context(_open(Path(name)))
        lines = _lines(stream, name, max_chars)
        while batch := list(islice(lines, batch_lines)):
            yield batch


def _stdin() -> IO[str]:
    # Decode standard input like the files (UTF-8, bad bytes replaced), whatever the locale says.
    buffer = getattr(sys.stdin, "buffer", None)
    return sys.stdin if buffer is None else io.TextIOWrapper(buffer, encoding="utf-8", errors="replace")


def _open(path: Path) -> IO[str]:
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8", errors="replace")
        return path.open(encoding="utf-8", errors="replace")
    except OSError as err:
        raise FlipmoeInputError(f"cannot be read: {err.strerror}", path=path) from None


def _lines(stream: IO[str], name: str, max_chars: int) -> Iterator[str]:
    """Lines without their line break, each cut to `max_chars`; a longer line is read in pieces so
    it never has to fit in memory."""
    while True:
        line = piece = _read(stream, name, max_chars)
        if not piece:
            return
        while piece and not piece.endswith("\n"):
            piece = _read(stream, name, max_chars)
        yield line.rstrip("\r\n")


def _read(stream: IO[str], name: str, max_chars: int) -> str:
    try:
        return stream.readline(max_chars)
    except (OSError, EOFError) as err:  # e.g. a truncated or corrupt .gz file
        raise FlipmoeInputError(f"reading failed: {err}", path=name) from None
