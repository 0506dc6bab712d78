"""Log toolkit: template mining on drain3 with general masking, parsing-accuracy scores, and the
incident analysis (template counts, changes against a reference, anomaly scores per service/pod)."""

from flipmoe.toolkits.logs.compare import (
    COUNT_COLUMNS,
    LogEvidence,
    LogFinding,
    LogReport,
    LogToolkitConfig,
    analyse_logs,
    template_counts,
    with_templates,
)
from flipmoe.toolkits.logs.masking import MASK_RULES, MaskCache, Masker, MaskRule
from flipmoe.toolkits.logs.mining import LogParser, LogParserConfig, ParsedLine
from flipmoe.toolkits.logs.scoring import grouping_accuracy, parsing_accuracy, template_accuracy

__all__ = [
    "COUNT_COLUMNS",
    "MASK_RULES",
    "LogEvidence",
    "LogFinding",
    "LogParser",
    "LogParserConfig",
    "LogReport",
    "LogToolkitConfig",
    "MaskCache",
    "MaskRule",
    "Masker",
    "ParsedLine",
    "analyse_logs",
    "grouping_accuracy",
    "parsing_accuracy",
    "template_accuracy",
    "template_counts",
    "with_templates",
]
