"""Corpus pipeline and the chaos gym."""
