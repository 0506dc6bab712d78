"""Train the learned fault-type diagnosis (`flipmoe train diagnosis`) on chaos-gym and real incidents.

Data, two kinds, pooled:
- chaos-gym incidents simulated in memory (below);
- labelled incident folders (`incidents`): imported real incidents (`flipmoe import nezha|tvdiag`) or a
  team's own post-mortems, each with its `label.json`. Their system is the label's `extra.system`, else
  its `source`; with `history_from_folder` each incident's parent folder is its alert history, as
  `flipmoe rca --history FOLDER` would analyse it.

Chaos data: for each system, its `per_system` count of incidents simulated in memory with the fault types
taken round-robin over the 16 of the taxonomy; incident i of the k-th listed system uses seed
`seed + 10_000 * k + i`. The default seed 100000 keeps training in 100000-129999; seeds from
600000 on are refused (600000-699999 are for held-out checks, 700000 and above for the final
benchmark). Each incident goes through the analysis path exactly as `flipmoe rca` runs it, and its
features are read at the *top suspect* of the localisation — a wrong suspect gives the features of
the wrong service, as it would in production. The fault type comes from the label the gym returns
with the incident; nothing here reads label.json.

Fit: a multinomial logistic regression (L2, on standardised features; the scaler is folded into the
written weights) over `diagnose.FEATURE_NAMES`, each sample weighted by 1 / (incidents of its system x
incidents of its type) (`sample_weights`), so that a 28-fault real day is not drowned by 300 simulated
incidents, nor a rare type by a common one. C is chosen by stratified k-fold cross-validation on the training
incidents (macro-F1), then the weight of the hand-written prototypes in the pooled score from the
same out-of-fold predictions (the smallest weight within `prior_tolerance` of the best, so a prior
that only ties stays out). Leave-one-system-out figures go into the card too: they say how well
the model carries over to a system it has not seen. The chaos part of the default run (304
incidents) takes about 2 minutes on two idle cores, almost all of it simulating and analysing.

The collected samples can be written to JSON lines (`save_samples`) and fitted again without
re-running the analysis (`load_samples`); the benchmark fits its held-out models that way.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.label import load_label
from flipmoe.telemetry.store import find_incidents, read_incident
from flipmoe.telemetry.taxonomy import FAULT_TYPES
from flipmoe.toolkits.diagnose import FEATURE_NAMES, MODEL_PATH, DiagnosisModel, prototype_log_probabilities

HELD_OUT_SEEDS_FROM = 600_000
"""Seeds from here on never train: 600000-699999 are for held-out checks, 700000+ for the benchmark."""
SYSTEM_SEED_STRIDE = 10_000
"""Seed offset between the systems of one run (so at most this many incidents per system)."""

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class DiagnosisTrainingConfig:
    """What to simulate and how to fit; the defaults are what the shipped model was trained with."""

    systems: tuple[str, ...] = ("webshop", "ticketing", "random")
    """Chaos-gym systems to simulate ('random' draws a new random DAG per incident)."""
    per_system: tuple[int, ...] = (160, 96, 48)
    """Incidents of each system, in the order of `systems` (one number: the same for all); fault types
    round-robin, so 160 is 10 of each of the 16 types. Cheap systems get more: a webshop incident costs
    about 2 s of CPU to simulate and analyse, a ticketing one 3 s, a random one 7 s."""
    seed: int = 100_000
    """First seed; see the module docstring for the seed of each incident."""
    window_minutes: float = 15.0
    """Incident window (and baseline) length; shorter than the gym's 30 to halve the analysis time."""
    workers: int = 2
    """Processes that simulate and analyse incidents in parallel."""
    c_grid: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    """Inverse L2 strengths tried by cross-validation."""
    prior_weights: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5)
    """Weights of the prototypes' log-probabilities tried after C is fixed."""
    prior_tolerance: float = 0.01
    """The smallest prior weight whose out-of-fold macro-F1 is within this of the best one is chosen
    (0.01 is about 3 of 300 incidents): a prior has to earn its place by more than noise."""
    folds: int = 5
    """Cross-validation folds (stratified by fault type)."""
    incidents: tuple[Path, ...] = ()
    """Folders of labelled incidents (or of such folders) added to the chaos incidents."""
    history_from_folder: bool = False
    """Analyse each labelled incident with its parent folder as its alert history."""

    def __post_init__(self) -> None:
        if not self.systems and not self.incidents:
            raise FlipmoeInputError("nothing to train on", hint="give chaos systems (e.g. --systems webshop,ticketing) "
                                                                "or labelled incidents (--incidents DIR)")
        if len(self.per_system) not in (1, len(self.systems)):
            raise FlipmoeInputError(f"{len(self.per_system)} per-system counts for {len(self.systems)} systems",
                                    hint="give one count for all systems or one per system, in the same order")
        if not all(1 <= n <= SYSTEM_SEED_STRIDE for n in self.per_system):
            raise FlipmoeInputError(f"per-system counts must be in 1..{SYSTEM_SEED_STRIDE}, got {self.per_system}")
        last = max((end for _, (_, end) in self.seed_ranges().items()), default=self.seed)
        if self.seed < 0 or last >= HELD_OUT_SEEDS_FROM:
            raise FlipmoeInputError(
                f"training seeds {self.seed}-{last} reach into the held-out range",
                hint=f"seeds from {HELD_OUT_SEEDS_FROM} on are reserved for evaluation; use e.g. --seed 100000")
        if self.workers < 1 or self.folds < 2 or not self.c_grid or not self.prior_weights:
            raise FlipmoeInputError("workers must be >= 1, folds >= 2, and the C and prior-weight grids non-empty")
        if any(c <= 0 for c in self.c_grid) or any(w < 0 for w in self.prior_weights) or self.prior_tolerance < 0:
            raise FlipmoeInputError("C values must be positive, prior weights and their tolerance non-negative")

    def counts(self) -> dict[str, int]:
        """Incidents per system."""
        counts = self.per_system * len(self.systems) if len(self.per_system) == 1 else self.per_system
        return dict(zip(self.systems, counts, strict=True))

    def seed_ranges(self) -> dict[str, tuple[int, int]]:
        """First and last seed of each system."""
        return {system: (self.seed + SYSTEM_SEED_STRIDE * k, self.seed + SYSTEM_SEED_STRIDE * k + n - 1)
                for k, (system, n) in enumerate(self.counts().items())}


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One training incident: the features read at its top suspect and the injected fault type."""

    features: Mapping[str, float]
    fault_type: str
    system: str = ""
    seed: int = -1
    localized: bool = True
    """Whether the top suspect was the labelled service (features then describe the right service)."""
    incident: str = ""
    """The incident's id, for labelled folders (chaos samples are named by system and seed)."""

    def to_json(self) -> dict[str, Any]:
        return {"features": dict(self.features), "fault_type": self.fault_type, "system": self.system,
                "seed": self.seed, "localized": self.localized, "incident": self.incident}


def save_samples(samples: Sequence[Sample], path: str | Path) -> Path:
    """Write samples as JSON lines (one per incident), so a fit can be repeated without the analysis."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(s.to_json(), sort_keys=True) + "\n" for s in samples), encoding="utf-8")
    return path


def load_samples(path: str | Path) -> list[Sample]:
    """Samples written by `save_samples`; a malformed file is one clear error."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise FlipmoeInputError(f"cannot read samples ({err.strerror or err})", path=path) from None
    samples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            sample = Sample(features={str(k): float(v) for k, v in row["features"].items()},
                            fault_type=str(row["fault_type"]), system=str(row.get("system", "")),
                            seed=int(row.get("seed", -1)), localized=bool(row.get("localized", True)),
                            incident=str(row.get("incident", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise FlipmoeInputError(f"line {number} is not a diagnosis sample ({type(err).__name__}: {err})",
                                    path=path) from None
        if sample.fault_type not in FAULT_TYPES:
            raise FlipmoeInputError(f"line {number}: fault type {sample.fault_type!r} is not in the taxonomy",
                                    path=path)
        samples.append(sample)
    return samples


def training_plan(config: DiagnosisTrainingConfig) -> list[tuple[str, str, int]]:
    """(system, fault type, seed) of every training incident."""
    types = list(FAULT_TYPES)
    return [(system, types[i % len(types)], first + i)
            for system, (first, last) in config.seed_ranges().items() for i in range(last - first + 1)]


def collect_samples(config: DiagnosisTrainingConfig, *,
                    progress: Progress | None = None) -> tuple[list[Sample], list[str]]:
    """Simulate and analyse the training incidents; returns the samples and one line per failure."""
    from data_pipeline.chaos.systems import get_system

    for system in config.systems:
        get_system(system, seed=0)  # an unknown name fails here, before any work
    plan = training_plan(config)
    samples: list[Sample] = []
    failures: list[str] = []
    started = time.perf_counter()

    def record(position: int, job: tuple[str, str, int], result: Sample | str) -> None:
        if isinstance(result, Sample):
            samples.append(result)
            status = "suspect ok" if result.localized else "suspect wrong"
        else:
            failures.append(f"{job[0]} {job[1]} seed {job[2]}: {result}")
            status = f"skipped ({result})"
        if progress is not None:
            elapsed = time.perf_counter() - started
            eta = elapsed / position * (len(plan) - position)
            progress(f"[{position}/{len(plan)}] {job[0]:<10} {job[1]:<19} seed {job[2]}  {status}  "
                     f"({elapsed:.0f} s, about {eta:.0f} s left)")

    if config.workers == 1:
        for position, job in enumerate(plan, start=1):
            record(position, job, _sample(*job, config.window_minutes))
    else:
        with ProcessPoolExecutor(max_workers=config.workers) as pool:
            futures = {pool.submit(_sample, *job, config.window_minutes): job for job in plan}
            for position, future in enumerate(as_completed(futures), start=1):
                record(position, futures[future], future.result())
    samples.sort(key=lambda s: (s.system, s.seed))
    return samples, failures


def _sample(system: str, fault: str, seed: int, window_minutes: float) -> Sample | str:
    """One incident -> its sample, or why there is none (runs in a worker process)."""
    from data_pipeline.chaos import ChaosConfig, generate_incident
    from director.director import local_director

    try:
        incident, label = generate_incident(system, fault, seed=seed, window_minutes=window_minutes,
                                            config=ChaosConfig(include_code=False))
        report, outputs = local_director().analyse_with_outputs(incident, ["diagnosis"])
    except Exception as err:  # one odd incident must not lose the rest of a long run
        return f"{type(err).__name__}: {err}"
    diagnosis = outputs["diagnosis"]
    if diagnosis is None or not diagnosis.features or not report.root_causes:
        return "no suspect, so nothing to diagnose"
    return Sample(features=dict(diagnosis.features), fault_type=label.fault_type, system=system,
                  seed=seed, localized=report.root_causes[0].service == label.service)


def collect_labelled_samples(folders: Sequence[str | Path], *, history_from_folder: bool = False,
                             progress: Progress | None = None) -> tuple[list[Sample], list[str]]:
    """Analyse every labelled incident under `folders` as `flipmoe rca` does and read its diagnosis
    features; returns the samples and one line per incident that gave none (no label.json, or an
    analysis that failed: one odd incident must not lose the rest). With `history_from_folder` each
    incident's parent folder is its alert history (`rca --history`), as `flipmoe train ranking` does."""
    from director.actors.base import RunSettings
    from director.director import Director, local_director
    from eval.train_ranking import system_of

    samples: list[Sample] = []
    failures: list[str] = []
    directors: dict[Path | None, Director] = {}
    for folder in folders:
        directories = find_incidents(folder)
        started = time.perf_counter()
        for position, directory in enumerate(directories, start=1):
            label = load_label(directory)
            if label is None:
                failures.append(f"{directory}: no label.json")
                continue
            history = Path(directory).resolve().parent if history_from_folder else None
            if history not in directors:
                directors[history] = local_director(settings=RunSettings(history=history))
            try:
                report, outputs = directors[history].analyse_with_outputs(read_incident(directory), ["diagnosis"])
            except Exception as err:  # noqa: BLE001 - reported with the others; the run goes on
                failures.append(f"{directory}: {type(err).__name__}: {err}")
                continue
            diagnosis = outputs["diagnosis"]
            if diagnosis is None or not diagnosis.features or not report.root_causes:
                failures.append(f"{directory}: no suspect, so nothing to diagnose")
                continue
            samples.append(Sample(features=dict(diagnosis.features), fault_type=label.fault_type,
                                  system=system_of(directory, label), incident=directory.name,
                                  localized=report.root_causes[0].service == label.service))
            if progress is not None and (position % 50 == 0 or position == len(directories)):
                progress(f"[{position}/{len(directories)}] {folder}: incidents analysed "
                         f"({time.perf_counter() - started:.0f} s)")
    return samples, failures


def fit_diagnosis_model(samples: Sequence[Sample], *, c_grid: Sequence[float] = (0.1, 0.3, 1.0, 3.0, 10.0),
                        prior_weights: Sequence[float] = (0.0, 0.05, 0.1, 0.25, 0.5), prior_tolerance: float = 0.01,
                        folds: int = 5, seed: int = 0, card: Mapping[str, Any] | None = None,
                        leave_one_system_out: bool = True) -> DiagnosisModel:
    """Choose C and the prototype weight by cross-validation, fit on all samples, return the model.

    The card gets the data counts and the cross-validated figures of the prototypes, the model and
    the pooled score, added to `card`.
    """
    from sklearn.model_selection import StratifiedKFold

    x_NF, y_N = _matrix(samples)
    classes, counts = np.unique(y_N, return_counts=True)
    if classes.size < 2:
        raise FlipmoeInputError("training needs incidents of at least two fault types")
    n_splits = min(folds, int(counts.min()))
    if n_splits < 2:
        rare = ", ".join(c for c, n in zip(classes, counts, strict=True) if n < 2)
        raise FlipmoeInputError(f"cross-validation needs at least 2 incidents of every fault type; too few: {rare}",
                                hint="raise --per-system")
    splits = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x_NF, y_N))
    prior_NK = _prototype_log_p(samples, tuple(classes))
    w_N = sample_weights(samples)
    oof_by_c = {float(c): _out_of_fold_logits(x_NF, y_N, w_N, classes, splits, c) for c in c_grid}
    by_c = [{"C": c, **_scores(y_N, classes[oof_NK.argmax(1)])} for c, oof_NK in oof_by_c.items()]
    best = max(by_c, key=lambda row: (row["macro_f1"], -row["C"]))
    best_c = best["C"]
    pooled = [{"prior_weight": float(w), **_scores(y_N, classes[(oof_by_c[best_c] + w * prior_NK).argmax(1)])}
              for w in sorted(prior_weights)]
    top_f1 = max(row["macro_f1"] for row in pooled)
    chosen = next(row for row in pooled if row["macro_f1"] >= top_f1 - prior_tolerance)
    prior_weight = chosen["prior_weight"]
    estimator = _fit(best_c, x_NF, y_N, w_N)
    systems = sorted({s.system for s in samples})
    cv: dict[str, Any] = {
        "folds": n_splits,
        "selection": f"C by out-of-fold macro-F1 (ties: stronger regularisation), then the smallest prior_weight "
                     f"within {prior_tolerance:g} of the best out-of-fold macro-F1",
        "weighting": "1 / (incidents of the system x incidents of the fault type), mean 1 (sample_weights)",
        "leave_one_system_out_note": "C and the prior weight were chosen on all systems, the held-out one included",
        "by_C": by_c, "by_prior_weight": pooled, "chosen_C": best_c, "chosen_prior_weight": prior_weight,
        "prototypes": _scores(y_N, classes[prior_NK.argmax(1)]),
        "learned": {k: v for k, v in best.items() if k != "C"},
        "combined": {k: v for k, v in chosen.items() if k != "prior_weight"},
    }
    if leave_one_system_out and len(systems) > 1:
        cv["leave_one_system_out"] = _leave_one_system_out(samples, x_NF, y_N, w_N, best_c, prior_NK, prior_weight)
    full_card = {**(card or {}), "incidents": len(samples),
                 "counts_per_class": {str(c): int(n) for c, n in zip(classes, counts, strict=True)},
                 "counts_per_system": dict(Counter(s.system for s in samples)),
                 "top_suspect_correct_share": round(float(np.mean([s.localized for s in samples])), 3),
                 "cross_validation": cv, "sklearn": _sklearn_version()}
    coef_KF, intercept_K = _raw_weights(estimator)
    return DiagnosisModel(classes=tuple(str(c) for c in estimator.classes_), feature_names=FEATURE_NAMES,
                          coef_KF=coef_KF, intercept_K=intercept_K,
                          prior_weight=prior_weight, card=full_card)


def held_out_model(samples: Sequence[Sample], exclude: Callable[[Sample], bool], *,
                   c_grid: Sequence[float] = (1.0, 10.0), folds: int = 3, seed: int = 0) -> DiagnosisModel:
    """The shipped recipe fitted without the samples `exclude` picks (C chosen by cross-validation on
    the rest alone, no prototype prior): the model a held-out evaluation runs `rca` with. The grid is
    smaller than training's so that a benchmark can fit one per fold in seconds."""
    kept = [sample for sample in samples if not exclude(sample)]
    return fit_diagnosis_model(kept, c_grid=c_grid, prior_weights=(0.0,), folds=folds, seed=seed,
                               leave_one_system_out=False, card={"excluded": len(samples) - len(kept)})


def stratified_folds(samples: Sequence[Sample], k: int, *, seed: int = 0) -> list[set[str]]:
    """The incident ids of `samples` (one system's) in k folds stratified by fault type; k shrinks to the
    count of the rarest type when that is smaller (at least 2)."""
    from sklearn.model_selection import StratifiedKFold

    types = np.array([s.fault_type for s in samples])
    rarest = min(Counter(types.tolist()).values())
    splits = StratifiedKFold(max(2, min(k, rarest)), shuffle=True, random_state=seed).split(types, types)
    return [{samples[i].incident for i in test} for _, test in splits]


def train_diagnosis(config: DiagnosisTrainingConfig, *, out: str | Path = MODEL_PATH, command: str = "",
                    progress: Progress | None = None, samples_out: str | Path | None = None,
                    samples_in: str | Path | None = None) -> DiagnosisModel:
    """Collect the samples (simulate and analyse the chaos incidents, analyse the labelled folders), fit
    and write the model to `out`; returns it. `samples_out` also writes the samples as JSON lines;
    `samples_in` fits samples written so before instead of collecting any (`config`'s data fields are
    then not used)."""
    say = progress or (lambda line: None)
    started = time.perf_counter()
    failures: list[str] = []
    if samples_out is not None:  # fail before minutes of analysis, not after
        try:
            Path(samples_out).parent.mkdir(parents=True, exist_ok=True)
            Path(samples_out).touch()
        except OSError as err:
            raise FlipmoeInputError(f"cannot write the samples ({err.strerror or err})",
                                    path=Path(samples_out)) from None
    if samples_in is not None:
        samples = load_samples(samples_in)
        say(f"read {len(samples)} samples from {samples_in}")
        card: dict[str, Any] = {"command": command, "samples": str(samples_in)}
    else:
        plan = training_plan(config)
        samples = []
        if plan:
            say(f"simulating and analysing {len(plan)} incidents ({', '.join(config.systems)}; "
                f"{config.window_minutes:g}-minute windows; {config.workers} worker(s))")
            samples, failures = collect_samples(config, progress=progress)
        if config.incidents:
            say(f"analysing the labelled incidents under {', '.join(map(str, config.incidents))}"
                + (" (each incident's parent folder its alert history)" if config.history_from_folder else ""))
            real, missed = collect_labelled_samples(config.incidents, history_from_folder=config.history_from_folder,
                                                    progress=progress)
            samples, failures = samples + real, failures + missed
        card = {"command": command, "systems": list(config.systems), "per_system": config.counts(),
                "training_seeds": {system: list(bounds) for system, bounds in config.seed_ranges().items()},
                "seed_rule": "incident i of the k-th system: seed + 10000 k + i, fault type i mod 16 in taxonomy order",
                "window_minutes": config.window_minutes,
                "labelled_incidents": [str(folder) for folder in config.incidents],
                "history_from_folder": config.history_from_folder, "skipped": failures}
    if samples_out is not None:
        save_samples(samples, samples_out)  # checked writable before the collection, below
        say(f"wrote {len(samples)} samples to {samples_out}")
    collected = time.perf_counter()
    say(f"fitting on {len(samples)} incidents ({len(failures)} skipped)")
    model = fit_diagnosis_model(samples, c_grid=config.c_grid, prior_weights=config.prior_weights,
                                prior_tolerance=config.prior_tolerance, folds=config.folds, seed=config.seed,
                                card=card)
    fitted = time.perf_counter()
    model = DiagnosisModel(classes=model.classes, feature_names=model.feature_names, coef_KF=model.coef_KF,
                           intercept_K=model.intercept_K, prior_weight=model.prior_weight,
                           card={**model.card, "seconds": {"collect": round(collected - started, 1),
                                                           "fit": round(fitted - collected, 1)}})
    model.save(out)
    return model


def _matrix(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) feature matrix and (N,) fault types."""
    if not samples:
        raise FlipmoeInputError("no training incidents")
    x_NF = np.array([[s.features.get(name, 0.0) for name in FEATURE_NAMES] for s in samples], dtype=float)
    return x_NF, np.array([s.fault_type for s in samples])


def sample_weights(samples: Sequence[Sample]) -> np.ndarray:
    """(N,) weights, mean 1: each sample weighs 1 / (incidents of its system x incidents of its fault type),
    so that neither a large system nor a common type decides alone.

    When every system has the same mix of types this makes every system and every type weigh the same.
    Ours do not (a chaos system covers all 16 types, a real one 3 to 5), and then the totals only lean
    that way: on the shipped data a chaos system carries about 1.4 times the TrainTicket day's weight
    and 3.3 to 4 times a TVDiag system's. Raking to exact totals was measured and fits worse everywhere
    (the few incidents of a type that only one small system has then carry a large part of the weight:
    cross-validated accuracy 0.72 -> 0.60, chaos held out 0.71-0.75 -> 0.38-0.44)."""
    systems = Counter(s.system for s in samples)
    types = Counter(s.fault_type for s in samples)
    w_N = np.array([1.0 / (systems[s.system] * types[s.fault_type]) for s in samples])
    return w_N / w_N.mean()


def _fit(c: float, x_NF: np.ndarray, y_N: np.ndarray, w_N: np.ndarray) -> Any:
    """Standardised features, then the weighted logistic regression. Standardising lets the L2 penalty
    treat a rare feature (a TLS error seen in a few incidents) like a common one (latency seen in most)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    return pipeline.fit(x_NF, y_N, logisticregression__sample_weight=w_N / w_N.mean())


def _raw_weights(pipeline: Any) -> tuple[np.ndarray, np.ndarray]:
    """The fitted pipeline's (K, F) weights and (K,) intercepts on the raw features (the scaler folded
    in), so the analysis path scores with one matrix product and needs no scikit-learn."""
    scaler, regression = pipeline[0], pipeline[-1]
    coef_KF, intercept_K = regression.coef_, regression.intercept_
    if len(regression.classes_) == 2:  # one logit for the second class: the same softmax with a zero row first
        coef_KF, intercept_K = np.vstack([np.zeros_like(coef_KF), coef_KF]), np.concatenate([[0.0], intercept_K])
    coef_KF = coef_KF / scaler.scale_
    return coef_KF, intercept_K - coef_KF @ scaler.mean_


def _out_of_fold_logits(x_NF: np.ndarray, y_N: np.ndarray, w_N: np.ndarray, classes: np.ndarray,
                        splits: Sequence[tuple[np.ndarray, np.ndarray]], c: float) -> np.ndarray:
    """(N, K) log-probabilities of each sample from the fold that did not train on it."""
    out_NK = np.full((len(y_N), len(classes)), -np.inf)
    for train, test in splits:
        estimator = _fit(c, x_NF[train], y_N[train], w_N[train])
        columns = np.searchsorted(classes, estimator.classes_)
        out_NK[np.ix_(test, columns)] = estimator.predict_log_proba(x_NF[test])
    return out_NK


def _prototype_log_p(samples: Sequence[Sample], classes: tuple[str, ...]) -> np.ndarray:
    """(N, K) the prototypes' log-probabilities over `classes`, as `diagnose.classify` pools them."""
    rows = [prototype_log_probabilities(sample.features) for sample in samples]
    return np.array([[row[c] for c in classes] for row in rows])


def _leave_one_system_out(samples: Sequence[Sample], x_NF: np.ndarray, y_N: np.ndarray, w_N: np.ndarray, c: float,
                          prior_NK: np.ndarray, prior_weight: float) -> dict[str, dict[str, dict[str, float]]]:
    """Per system: accuracy and macro-F1 of models trained on the other systems only (with the C and prior
    weight chosen on all systems: a mild optimism, noted in the card). A system whose others hold a single
    fault type is left out: nothing can be fitted without it."""
    systems_N = np.array([s.system for s in samples])
    out = {}
    for system in sorted(set(systems_N)):
        held = systems_N == system
        if np.unique(y_N[~held]).size < 2:
            continue
        estimator = _fit(c, x_NF[~held], y_N[~held], w_N[~held])
        classes = np.unique(y_N)
        log_p = np.full((int(held.sum()), len(classes)), -np.inf)
        log_p[:, np.searchsorted(classes, estimator.classes_)] = estimator.predict_log_proba(x_NF[held])
        out[str(system)] = {"learned": _scores(y_N[held], classes[log_p.argmax(1)]),
                       "combined": _scores(y_N[held], classes[(log_p + prior_weight * prior_NK[held]).argmax(1)])}
    return out


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
            "macro_f1": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 4)}


def _sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)
