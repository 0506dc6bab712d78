"""Corpus pipeline and the chaos gym.

The corpus pipeline (`flipmoe data build CONFIG`, `data_pipeline.pipeline.build`) turns sources into
the experts' training data: `sources` (files, JSONL, LogHub, chaos-gym incidents) -> `documents`
(normalisation, modality tags) -> `filters` and `classifiers` (binary, garbage, length, repetition,
relevance, quality) -> `dedup` (exact and MinHash near-duplicates) -> `contamination` (evaluation-set
overlap) -> `balance` (modality mixture) -> `transform` and `shards` (tokenized rows per expert in
curriculum order, `manifest.json`); `instruct` synthesises grounded instruction data from incidents.
Configuration: `data_pipeline.config.DataBuildConfig`; an example is `configs/example.yaml`.

The chaos gym lives in `data_pipeline.chaos`.
"""
