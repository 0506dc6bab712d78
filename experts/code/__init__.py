"""The code expert: significance masking over source and configuration; exception and config tasks."""
