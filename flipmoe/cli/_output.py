"""Where commands that stream JSON lines write them: standard output, or a file written in full or not at all."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

from flipmoe.errors import FlipmoeInputError


def emit(out: str | None, write: Callable[[IO[str]], None]) -> None:
    """Run `write` on standard output, or on a file beside `out` that is renamed into place when complete.

    The file is created with mode 0666 less the umask, as any other file (mkstemp's 0600 would hide the
    output from whoever is meant to read it). A reader that closes the pipe early (`| head`) ends the
    output quietly.
    """
    if out is None:
        try:
            write(sys.stdout)
        except BrokenPipeError:
            # Point stdout at devnull so the final flush at exit does not fail again (the recipe of Python's
            # `signal` documentation).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    path = Path(out)
    if not path.parent.is_dir():
        raise FlipmoeInputError("the folder of --out does not exist", path=path)
    if path.is_dir():
        raise FlipmoeInputError("--out is a folder; give a file name", path=path)
    staging = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            write(stream)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
