"""Actors that misbehave on purpose, for the runtime tests (imported by Ray workers too)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import Field

from director.actors.analysis import VerifyOutput
from director.actors.base import ActorContext, ActorInput, ActorOutput, actor
from flipmoe.toolkits.rootcause import RootCause


class Nothing(ActorInput):
    pass


class Done(ActorOutput):
    note: str = ""


@actor("test_boom", Nothing, Done, "raises")
def boom(ctx: ActorContext, args: Nothing) -> Done:
    raise RuntimeError("boom: this actor always fails")


class Sleep(ActorInput):
    seconds: float = 5.0


@actor("test_sleep", Sleep, Done, "sleeps")
def sleep(ctx: ActorContext, args: Sleep) -> Done:
    time.sleep(args.seconds)
    return Done(note=f"slept {args.seconds}")


class CrashOnce(ActorInput):
    marker: str


@actor("test_crash_once", CrashOnce, Done, "kills its worker the first time it runs")
def crash_once(ctx: ActorContext, args: CrashOnce) -> Done:
    marker = Path(args.marker)
    if not marker.exists():
        marker.write_text("crashed once")
        os._exit(1)  # a worker that dies: Ray must re-run the step on another
    return Done(note="survived")


class Reject(ActorInput):
    suspect: RootCause
    reject: list[str] = Field(default_factory=list)


@actor("test_reject", Reject, VerifyOutput, "a verifier that finds no evidence for the services listed")
def reject(ctx: ActorContext, args: Reject) -> VerifyOutput:
    return VerifyOutput(suspect=args.suspect, verified=args.suspect.service not in args.reject)
