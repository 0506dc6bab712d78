"""Typed configuration of `flipmoe data build`: one keyword-only dataclass per stage, loaded from YAML.

    from data_pipeline.config import DataBuildConfig
    config = DataBuildConfig.load("data_pipeline/configs/example.yaml")

Every field has a default, so a file only names what differs; unknown keys and wrong types are
errors that name the key (`flipmoe.config.load_yaml`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.documents import MODALITIES
from flipmoe.config import load_yaml, save_yaml
from flipmoe.errors import FlipmoeInputError

SOURCE_KINDS = ("directory", "jsonl", "loghub", "chaos", "incidents")
HELDOUT_SEED_BASE = 600_000
"""experts.sources.HELDOUT_SEED_BASE (not imported: that module loads the telemetry stack)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FlipmoeInputError(message)


@dataclass(kw_only=True)
class SourceConfig:
    """One corpus source."""

    name: str
    """Name used in document ids and the report."""
    kind: str
    """directory (text/code/config/log files), jsonl, loghub (`*.log` or LogHub `*.csv` with a Content
    column), chaos (incidents simulated in memory) or incidents (incident directories on disk)."""
    path: str = ""
    """File or directory (not used by `chaos`)."""
    include: tuple[str, ...] = ("**/*",)
    """Glob patterns under `path` for directory, jsonl and loghub sources."""
    modality: str = ""
    """Trusted modality of every document of this source; empty: tagged from extension and content."""
    text_field: str = "text"
    """JSONL: the field holding the text."""
    modality_field: str = ""
    """JSONL: the field holding a modality tag (optional)."""
    system: str = "webshop"
    """chaos: the simulated system."""
    incidents: int = 4
    """chaos: incidents to simulate."""
    seed: int = 0
    """chaos: seed of the first incident (incident i uses seed + i)."""
    window_minutes: float = 10.0
    """chaos: length of each simulated incident window."""
    lines_per_document: int = 40
    """Log lines (and metric rows, events) per document cut from a longer stream."""
    traces_per_incident: int = 40
    """incidents and chaos: traces rendered as documents per incident."""
    max_chars: int = 16_000
    """Longer files are cut at line boundaries into documents of at most this many characters."""
    required: bool = True
    """A missing path is an error; when False the source is skipped with a note in the report."""

    def __post_init__(self) -> None:
        _require(bool(self.name), "sources[].name must not be empty")
        _require(self.kind in SOURCE_KINDS, f"sources[{self.name}].kind must be one of {', '.join(SOURCE_KINDS)}")
        _require(self.kind == "chaos" or bool(self.path), f"sources[{self.name}].path is required for {self.kind}")
        _require(not self.modality or self.modality in MODALITIES,
                 f"sources[{self.name}].modality must be one of {', '.join(MODALITIES)} or empty")
        # Chaos seeds from experts.sources.HELDOUT_SEED_BASE up are the experts' evaluation incidents.
        _require(self.kind != "chaos" or self.seed + self.incidents <= HELDOUT_SEED_BASE,
                 f"sources[{self.name}]: chaos seeds must stay below {HELDOUT_SEED_BASE} (held-out incidents)")
        _require(self.lines_per_document > 0 and self.max_chars >= 256 and self.incidents >= 0,
                 f"sources[{self.name}]: lines_per_document > 0, max_chars >= 256, incidents >= 0")


@dataclass(kw_only=True)
class FilterConfig:
    """Heuristic filters: binary and garbage text, length, repetition."""

    min_chars: int = 64
    """Shorter documents are dropped."""
    max_chars: int = 200_000
    """Longer documents are dropped (sources cut files well below this)."""
    max_garbage_fraction: float = 0.05
    """Largest share of control, replacement (U+FFFD) and private-use characters; NUL means binary."""
    min_alnum_fraction: float = 0.25
    """Smallest share of letters and digits among non-space characters."""
    max_duplicate_line_fraction: float = 0.5
    """Largest share of lines (of 8+ characters) that repeat an earlier line exactly."""
    max_top_ngram_fraction: float = 0.3
    """Largest share of words covered by the most frequent word 3-gram (prose, code, config only:
    telemetry repeats its templates by nature and goes through near-dedup instead)."""

    def __post_init__(self) -> None:
        _require(0 <= self.min_chars < self.max_chars, "filters: 0 <= min_chars < max_chars")
        for name in ("max_garbage_fraction", "min_alnum_fraction", "max_duplicate_line_fraction",
                     "max_top_ngram_fraction"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"filters.{name} must be in [0, 1]")


@dataclass(kw_only=True)
class ClassifierConfig:
    """A trainable linear classifier over hashed n-grams (relevance or quality)."""

    enabled: bool = True
    """Apply the classifier."""
    model: str = ""
    """Saved model (`.npz`); empty: trained at the start of the build on the built-in labelled sets."""
    threshold: float = 0.5
    """Documents scoring below are removed."""
    modalities: tuple[str, ...] = ("log", "trace", "code", "config", "prose")
    """Modalities the classifier judges; metrics are number tables, which the heuristic filters judge better."""

    def __post_init__(self) -> None:
        _require(0.0 <= self.threshold <= 1.0, "classifier threshold must be in [0, 1]")
        bad = sorted(set(self.modalities) - set(MODALITIES))
        _require(not bad, f"classifier modalities: unknown {bad}")


@dataclass(kw_only=True)
class DedupConfig:
    """Exact and MinHash near-duplicate removal."""

    exact: bool = True
    """Remove documents whose normalised text repeats exactly."""
    near: bool = True
    """Remove near-duplicates (MinHash + LSH)."""
    near_modalities: tuple[str, ...] = ("log", "trace", "code", "config", "prose")
    """Modalities near-dedup applies to. Not metrics by default: successive windows of one service share
    every metric name and label, so their text is near-identical while their values, the content, differ."""
    threshold: float = 0.8
    """Jaccard similarity from which two documents count as near-duplicates."""
    num_perm: int = 128
    """MinHash permutations (signature length)."""
    seed: int = 1
    """Seed of the permutations (datasketch's `seed`)."""
    char_ngram: int = 5
    """Characters per shingle for logs, metrics and traces."""
    word_ngram: int = 3
    """Words per shingle for code, configuration and prose."""

    def __post_init__(self) -> None:
        _require(0.0 < self.threshold <= 1.0, "dedup.threshold must be in (0, 1]")
        _require(self.num_perm >= 16, "dedup.num_perm must be at least 16")
        _require(self.char_ngram >= 1 and self.word_ngram >= 1, "dedup n-gram sizes must be positive")
        bad = sorted(set(self.near_modalities) - set(MODALITIES))
        _require(not bad, f"dedup.near_modalities: unknown {bad}")


@dataclass(kw_only=True)
class ContaminationConfig:
    """Removal of training text that overlaps an evaluation set."""

    enabled: bool = True
    """Check corpus documents and synthesised instructions against the evaluation sets."""
    threshold: float = 0.5
    """Estimated Jaccard with any evaluation text from which a training text is removed."""
    eval_paths: tuple[str, ...] = ()
    """Files or directories holding evaluation text (read like a `directory` source)."""
    expert_heldout: bool = True
    """Also check against every expert family's held-out task data (`get_spec(f).task_data(..., "heldout")`)."""


@dataclass(kw_only=True)
class BalanceConfig:
    """Resampling to target modality mixture weights."""

    enabled: bool = True
    """Resample; otherwise keep the corpus mixture as it is."""
    weights: dict[str, float] = field(default_factory=lambda: {
        "log": 0.3, "trace": 0.15, "metric": 0.15, "code": 0.2, "config": 0.1, "prose": 0.1})
    """Target share of characters per modality (normalised over the modalities present)."""
    max_repeat: float = 3.0
    """Largest number of times a document of an under-represented modality may be repeated."""
    seed: int = 0
    """Seed of the sampling."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(MODALITIES))
        _require(not unknown, f"balance.weights: unknown modalities {unknown}; valid: {', '.join(MODALITIES)}")
        _require(all(w >= 0 for w in self.weights.values()) and sum(self.weights.values()) > 0,
                 "balance.weights must be non-negative with a positive sum")
        _require(self.max_repeat >= 1.0, "balance.max_repeat must be >= 1")


@dataclass(kw_only=True)
class ExpertShardConfig:
    """The shards of one expert: which modalities feed it, with which tokenizer and objective."""

    name: str
    """Expert name (output folder)."""
    family: str = ""
    """Registry family (`experts.registry`); its spec supplies the objective and tokenizer settings."""
    modalities: tuple[str, ...] = ()
    """Modalities whose documents go to this expert."""
    objective: str = ""
    """causal, ul2 or significance; empty: the family's objective."""
    tokenizer: str = ""
    """Tokenizer model file or expert directory; empty: trained on this expert's documents."""
    vocab_size: int = 2048
    """Vocabulary size when the tokenizer is trained here."""

    def __post_init__(self) -> None:
        _require(bool(self.name), "experts[].name must not be empty")
        bad = sorted(set(self.modalities) - set(MODALITIES))
        _require(not bad, f"experts[{self.name}].modalities: unknown {bad}")


@dataclass(kw_only=True)
class ShardConfig:
    """Tokenized, packed shards per expert."""

    enabled: bool = True
    """Write shards (needs `data_pipeline.objectives`)."""
    experts: tuple[ExpertShardConfig, ...] = (
        ExpertShardConfig(name="logs", family="logs", modalities=("log", "prose")),
        ExpertShardConfig(name="metrics", family="metrics", modalities=("metric",)),
        ExpertShardConfig(name="traces", family="traces", modalities=("trace",)),
        ExpertShardConfig(name="code", family="code", modalities=("code", "config")),
    )
    """Experts to write shards for."""
    seq_len: int = 256
    """Tokens per packed sequence."""
    sequences_per_shard: int = 8192
    """Sequences per shard file pair."""
    heldout_fraction: float = 0.02
    """Share of documents (by id hash) written to the validation split."""
    seed: int = 0
    """Seed of the objectives' masking."""

    def __post_init__(self) -> None:
        _require(self.seq_len >= 16 and self.sequences_per_shard > 0, "shards: seq_len >= 16, sequences_per_shard > 0")
        _require(0.0 <= self.heldout_fraction < 1.0, "shards.heldout_fraction must be in [0, 1)")


@dataclass(kw_only=True)
class InstructConfig:
    """Instruction data synthesised from real windows of telemetry."""

    enabled: bool = True
    """Synthesise from the incidents of `chaos` and `incidents` sources."""
    per_incident: int = 6
    """Grounded examples per incident and task (log change, slow call, metric shift)."""
    variations: int = 2
    """Prompt variations per example (different phrasings of the same instruction)."""
    inversion: bool = True
    """Also emit inverted examples (answer given, the grounding window asked for)."""
    seed: int = 0
    """Seed of window and template choice."""


@dataclass(kw_only=True)
class ExecutionConfig:
    """Where the pipeline runs."""

    runner: str = "local"
    """local (one process) or ray (Ray Data; a local Ray started with `workers` CPUs unless one is up)."""
    workers: int = 2
    """Ray workers (CPUs) for the per-document stages."""
    batch_size: int = 256
    """Documents per batch in the per-document stages."""

    def __post_init__(self) -> None:
        _require(self.runner in ("local", "ray"), "execution.runner must be local or ray")
        _require(self.workers >= 1 and self.batch_size >= 1, "execution.workers and batch_size must be >= 1")


@dataclass(kw_only=True)
class DataBuildConfig:
    """Everything `flipmoe data build` does."""

    out: str = "data/build"
    """Output directory (shards, instructions, classifiers, manifest.json, report.json)."""
    sources: tuple[SourceConfig, ...] = ()
    """Corpus sources."""
    filters: FilterConfig = field(default_factory=FilterConfig)
    """Heuristic filters."""
    relevance: ClassifierConfig = field(default_factory=ClassifierConfig)
    """DevOps vs off-domain classifier."""
    quality: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(modalities=("code", "config", "prose")))
    """Well-formed vs corrupted text classifier; by default not applied to telemetry, whose odd-looking
    lines (BGL, Thunderbird) it was not trained on and which the garbage filters judge instead."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Deduplication."""
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig)
    """Evaluation-set overlap removal."""
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    """Modality mixture."""
    shards: ShardConfig = field(default_factory=ShardConfig)
    """Tokenized shards per expert."""
    instruct: InstructConfig = field(default_factory=InstructConfig)
    """Grounded instruction synthesis."""
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    """Single process or Ray Data."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        _require(len(names) == len(set(names)), "sources[].name must be unique")

    @classmethod
    def load(cls, path: str | Path) -> DataBuildConfig:
        return load_yaml(cls, path)

    def save(self, path: str | Path) -> None:
        save_yaml(self, path)
