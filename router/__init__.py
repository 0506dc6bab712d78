"""The learned per-request router over frozen experts."""
