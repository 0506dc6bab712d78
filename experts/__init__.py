"""Modality experts: one folder per expert family, each with its own tokenizer and decoder."""
