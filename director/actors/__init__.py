"""Actors: the typed steps runbooks call (see `base` for the contract, `registry()` for the list)."""

from director.actors.base import ActorContext, ActorInput, ActorOutput, ActorSpec, RunSettings, Trials, actor, registry

__all__ = ["ActorContext", "ActorInput", "ActorOutput", "ActorSpec", "RunSettings", "Trials", "actor", "registry"]
