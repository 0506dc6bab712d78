"""Importers: external telemetry formats -> flipmoe incident directories."""
