"""Does the learned fault-type diagnosis carry over to systems it has not seen? One run, three protocols.

Every incident goes through the shipped analysis path (`local_director().analyse_with_outputs`, as
`flipmoe rca` runs it) and its diagnosis features are read at the top suspect, exactly as
`flipmoe train diagnosis` reads them. Data: chaos incidents (webshop, ticketing; training seeds), the
TVDiag train cases (GAIA, SockShop, HotelReservation) and the TrainTicket day when ../shared/data is
present. Per real system, fault-type accuracy and macro-F1 of:
- the shipped model (`flipmoe/toolkits/diagnosis_model.json`, fitted on chaos only);
- leave-one-system-out: fitted (`eval.train_diagnosis.fit_diagnosis_model`) on chaos and the other real
  systems, tested on the held-out one — the figure that counts for systems nobody here has seen;
- chaos only, refitted on this run's chaos incidents;
- 5-fold within the system (stratified; a standardised logistic regression, not the shipped fit; types
  with fewer than 5 cases left out, so n is a little smaller): how much the features say when the
  system's own labelled incidents are there to learn from.

    python benchmarks/bench_diagnosis_transfer.py [--chaos-per-system 48] [--keep DIR]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _corpora import nezha_corpus, tvdiag_corpus
from sklearn.metrics import f1_score

from eval.train_diagnosis import DiagnosisTrainingConfig, Sample, collect_samples, fit_diagnosis_model
from flipmoe.telemetry import find_incidents, read_incident
from flipmoe.telemetry.label import load_label
from flipmoe.toolkits.diagnose import DiagnosisModel, classify, load_model

CHAOS_SYSTEMS = ("webshop", "ticketing")


def real_samples(directories: Sequence[Path]) -> list[Sample]:
    from director.director import local_director

    director, samples = local_director(), []
    for directory in directories:
        label = load_label(directory)
        if label is None:
            continue
        system = str(label.extra.get("system", "tvdiag")) if label.source == "tvdiag" else "trainticket"
        report, outputs = director.analyse_with_outputs(read_incident(directory), ["diagnosis"])
        diagnosis = outputs["diagnosis"]
        if diagnosis is None or not diagnosis.features or not report.root_causes:
            continue
        samples.append(Sample(features=dict(diagnosis.features), fault_type=label.fault_type, system=system,
                              localized=report.root_causes[0].service == label.service))
    return samples


def predict(model: DiagnosisModel, samples: Sequence[Sample]) -> np.ndarray:
    """The fault type `flipmoe rca` would report with `model` (its pooling with the prototypes included)."""
    return np.array([classify(s.features, model).fault_type for s in samples])


def scores(truth: np.ndarray, predicted: np.ndarray) -> str:
    return f"{np.mean(truth == predicted):.3f} / {f1_score(truth, predicted, average='macro', zero_division=0):.3f}"


def within_system(samples: Sequence[Sample]) -> str:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from flipmoe.toolkits.diagnose import FEATURE_NAMES

    common = {t for t, n in Counter(s.fault_type for s in samples).items() if n >= 5}
    kept = [s for s in samples if s.fault_type in common]
    if len(common) < 2:
        return "too few cases"
    x = np.array([[s.features.get(f, 0.0) for f in FEATURE_NAMES] for s in kept])
    y = np.array([s.fault_type for s in kept])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced"))
    predicted = cross_val_predict(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    return scores(y, predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chaos-per-system", type=int, default=48)
    parser.add_argument("--keep", help="keep the imported corpora and the samples here (reused when present)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="flipmoe-diagnosis-"))
    cache = root / f"diagnosis-samples-{args.chaos_per_system}.pkl"
    if cache.is_file():
        samples: list[Sample] = pickle.loads(cache.read_bytes())
    else:
        started = time.perf_counter()
        samples, _ = collect_samples(DiagnosisTrainingConfig(systems=CHAOS_SYSTEMS, per_system=(args.chaos_per_system,),
                                                             workers=1))
        directories = []
        for corpus in (tvdiag_corpus(root), nezha_corpus(root)):
            directories += sorted(find_incidents(corpus)) if corpus is not None else []
        samples += real_samples(directories)
        cache.write_bytes(pickle.dumps(samples))
        print(f"{len(samples)} incidents analysed in {time.perf_counter() - started:.0f} s")
    shipped = load_model()
    chaos = [s for s in samples if s.system in CHAOS_SYSTEMS]
    chaos_model = fit_diagnosis_model(chaos, folds=3)
    print(f"{'held-out system':16s} {'n':>4s}  {'shipped (chaos)':>15s}  {'leave-one-out':>15s}  {'chaos refit':>15s}  "
          f"{'5-fold within':>15s}   (accuracy / macro-F1)")
    for system in sorted({s.system for s in samples} - set(CHAOS_SYSTEMS)):
        test = [s for s in samples if s.system == system]
        truth = np.array([s.fault_type for s in test])
        loso = fit_diagnosis_model([s for s in samples if s.system != system], folds=3)
        shipped_cell = scores(truth, predict(shipped, test)) if shipped is not None else "none"
        print(f"{system:16s} {len(test):4d}  {shipped_cell:>15s}  {scores(truth, predict(loso, test)):>15s}  "
              f"{scores(truth, predict(chaos_model, test)):>15s}  {within_system(test):>15s}")


if __name__ == "__main__":
    main()
