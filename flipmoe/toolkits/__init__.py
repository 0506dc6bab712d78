"""Agents' toolkits: pure analysis functions over the incident model (logs, metrics, traces, ...)."""
