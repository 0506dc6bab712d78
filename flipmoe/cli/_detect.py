"""`flipmoe detect metrics|logs FILE --out JSONL`: streaming anomaly scores from the experts (or a classic baseline)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from flipmoe.errors import FlipmoeInputError

METRIC_METHODS = ("model", "zscore", "gaussian")
LOG_METHODS = ("model", "novelty")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("detect", help="streaming anomaly scores for a metric series or a log file",
                                   description="Score every sample of a metric series or every line of a log "
                                               "file in [0, 1] (higher: more anomalous). Streaming: the score "
                                               "of row t uses rows up to t only.")
    commands = parser.add_subparsers(dest="detect_command", metavar="SUBCOMMAND", required=True)
    metrics = commands.add_parser(
        "metrics", help="score each row of a timestamp,value CSV",
        description="Read a CSV with columns timestamp,value (rows in time order) and write one JSON line per "
                    "row, in order: {\"timestamp\": ..., \"score\": s}. 'model' is the metrics expert's value "
                    "model: s is how far into the tails of its forecast (made from the samples before it) the "
                    "value falls, 1 - 2 min(F, 1 - F). Rows before 16 real values (too little history) and "
                    "empty values score 0.")
    metrics.add_argument("file", metavar="CSV", help="timestamp,value CSV ('-' for standard input)")
    metrics.add_argument("--metric", default="", metavar="NAME",
                         help="the metric's name (e.g. http_request_duration_seconds:p95): tells the model what "
                              "kind of quantity it reads (default: unknown)")
    metrics.add_argument("--method", choices=METRIC_METHODS, default="model",
                         help="model (default), or a classic baseline: zscore (rolling, 30 samples), gaussian "
                              "(windowed Gaussian tail, 128 samples)")
    metrics.add_argument("--bundle", metavar="DIR", help="model bundle whose metrics detector to use "
                                                         "(default: the packaged one)")
    metrics.add_argument("--out", metavar="FILE", help="write here instead of standard output "
                                                       "(written in full or not at all)")
    metrics.set_defaults(handler=_metrics)
    logs = commands.add_parser(
        "logs", help="score each line of a log file",
        description="Read a log file (one message per line) and write one JSON line per log line: "
                    "{\"line\": n, \"score\": s}. 'model' is the logs expert: s is the line's mean surprise per "
                    "token relative to a uniform guess over its vocabulary (how unlike the logs it knows the line "
                    "reads), and the expert adapts as it reads: 4 steps of continued pretraining after every 256 "
                    "lines; "
                    "'novelty' is 1 / (times the line's template has been seen so far).")
    logs.add_argument("file", metavar="FILE", help="log file ('-' for standard input; .gz is unpacked)")
    logs.add_argument("--method", choices=LOG_METHODS, default="model", help="model (default) or novelty")
    logs.add_argument("--bundle", metavar="DIR", help="model bundle whose logs expert to use "
                                                      "(default: the packaged one)")
    logs.add_argument("--expert", metavar="DIR", help="a logs expert checkpoint to use instead of the bundle's "
                                                      "(e.g. one from 'flipmoe train expert --expert logs')")
    logs.add_argument("--out", metavar="FILE", help="write here instead of standard output "
                                                    "(written in full or not at all)")
    logs.set_defaults(handler=_logs)


# -- metrics ----------------------------------------------------------------------------------------------

def read_series(path: str) -> tuple[list[str], list[float]]:
    """The timestamps (as written) and values of a timestamp,value CSV; a bad row is named."""
    import numpy as np
    import pandas as pd

    source: Any = sys.stdin if path == "-" else path
    if path != "-" and Path(path).exists() and not Path(path).is_file():
        raise FlipmoeInputError("not a regular file", path=path, hint="pass a timestamp,value CSV")
    try:
        # Blank lines are kept while reading and dropped after, so a row's index still gives its line number.
        frame = pd.read_csv(source, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except FileNotFoundError:
        raise FlipmoeInputError("file not found", path=path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise FlipmoeInputError(f"not a readable CSV: {str(err).splitlines()[0]}", path=path) from None
    columns = [str(c).strip().lower() for c in frame.columns]
    if "timestamp" not in columns or "value" not in columns:
        raise FlipmoeInputError(f"the CSV needs columns timestamp,value; it has {','.join(map(str, frame.columns))}",
                                path=path)
    frame.columns = columns
    frame = frame[(frame[["timestamp", "value"]].apply(lambda c: c.str.strip()) != "").any(axis=1)]
    stamps = frame["timestamp"].str.strip()
    values = pd.to_numeric(frame["value"].str.strip().replace("", "nan"), errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy() & ~frame["value"].str.strip().str.lower().isin(
        ["", "nan", "null", "none"]).to_numpy())
    if bad.size:
        row = int(bad[0])
        raise FlipmoeInputError(f"line {int(frame.index[row]) + 2}: value {frame['value'].iloc[row]!r} is not a number",
                                path=path)
    infinite = np.flatnonzero(np.isinf(values.to_numpy(dtype=np.float64)))
    if infinite.size:
        row = int(infinite[0])
        raise FlipmoeInputError(f"line {int(frame.index[row]) + 2}: value {frame['value'].iloc[row]!r} is not a "
                                "finite number", path=path)
    times = _parse_times(stamps)
    if times is None:
        raise FlipmoeInputError("timestamps must all be numbers (epoch seconds) or ISO-8601 times", path=path)
    backwards = np.flatnonzero(np.diff(times) < 0)
    if backwards.size:
        raise FlipmoeInputError(f"line {int(frame.index[int(backwards[0]) + 1]) + 2}: timestamp goes back in time; a "
                                "streaming score needs the rows in time order", path=path,
                                hint="sort the CSV by timestamp")
    return stamps.tolist(), values.astype(float).tolist()


def _parse_times(stamps: Any) -> Any:
    import numpy as np
    import pandas as pd

    numeric = pd.to_numeric(stamps, errors="coerce")
    if stamps.size == 0 or not numeric.isna().any():
        seconds = numeric.to_numpy(dtype=np.float64)
        return seconds if np.isfinite(seconds).all() else None
    parsed = pd.to_datetime(stamps, errors="coerce", utc=True, format="ISO8601")
    if parsed.isna().any():
        return None
    return parsed.astype("int64").to_numpy()


def _metrics(args: argparse.Namespace) -> int:
    stamps, values = read_series(args.file)
    scores = metric_scores(values, method=args.method, metric=args.metric, bundle=args.bundle)
    _emit(args.out, ({"timestamp": _stamp(t), "score": round(float(s), 6)}
                     for t, s in zip(stamps, scores, strict=True)))
    return 0


def _stamp(text: str) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


def metric_scores(values: list[float], *, method: str, metric: str = "", bundle: str | None = None) -> Any:
    from flipmoe.toolkits.streaming import rolling_zscore, windowed_gaussian

    if method == "zscore":
        return rolling_zscore(values)
    if method == "gaussian":
        return windowed_gaussian(values)
    from experts.metrics.detector import MetricsDetector
    from router.bundle import detector_path, ensure_bundle

    return MetricsDetector.load(detector_path(ensure_bundle(bundle), "metrics")).score(values, metric)


# -- logs -------------------------------------------------------------------------------------------------

def _logs(args: argparse.Namespace) -> int:
    from flipmoe.cli._logs import _check_inputs, log_line_batches

    _check_inputs([args.file])
    scorer = log_scorer(args.method, bundle=args.bundle, expert=args.expert)
    batches = log_line_batches(args.file, batch_lines=LOG_BATCH, max_chars=LOG_MAX_CHARS)
    _emit(args.out, ({"line": n, "score": round(float(s), 6)} for n, s in
                     enumerate((s for batch in batches for s in scorer(batch)), start=1)))
    return 0


LOG_BATCH, LOG_MAX_CHARS = 4096, 10_000
"""Lines scored at a time (memory stays bounded on any file) and the longest line read whole."""


def log_scorer(method: str, *, bundle: str | None = None, expert: str | None = None,
               adapt: bool = True) -> Callable[[list[str]], Any]:
    """A stateful scorer of line batches: scores of one batch may depend on the batches before it."""
    if method == "novelty":
        from flipmoe.toolkits.streaming import TemplateNovelty

        return TemplateNovelty().score
    from experts.logs.detector import ADAPT_EVERY, LogsDetector

    if expert is not None:
        from experts.expert import Expert

        model = Expert.from_checkpoint(expert)
    else:
        from router.bundle import ensure_bundle, load_expert

        model = load_expert(ensure_bundle(bundle), "logs")
    if not hasattr(model, "model"):
        raise FlipmoeInputError("the bundle's logs expert is remote; detection needs a local checkpoint",
                                hint="pass --expert DIR")
    return LogsDetector(model, adapt_every=ADAPT_EVERY if adapt else 0).score


# -- output -----------------------------------------------------------------------------------------------

def _emit(out: str | None, records: Iterable[dict[str, Any]]) -> None:
    from flipmoe.cli._output import emit

    emit(out, lambda stream: _write(records, stream))


def _write(records: Iterable[dict[str, Any]], stream: IO[str]) -> None:
    for record in records:
        stream.write(json.dumps(record) + "\n")
