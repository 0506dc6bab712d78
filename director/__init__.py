"""Director / Actors / Agents: the runtime that turns an incident into an RCA report."""
