"""Localisation and fault-type accuracy of the shipped RCA path, with baselines, in one run.

Every flipmoe row is the Director running its runbook exactly as `flipmoe rca` does (steps in this
process; `eval.localization.director_ranker`). Data: chaos-gym incidents of several systems over every
fault type, generated from seeds that were never used while developing (the seed base is printed), and
the 28 labelled faults of the shared TrainTicket day and the 530 TVDiag train cases (GAIA, SockShop,
HotelReservation; alert events only) when ../shared/data is present. Rankers, side by
side: flipmoe as shipped (the packaged model bundle, as `rca` uses by default), the same without a
model, the no-model path restricted to metrics / traces / logs only (ablations), a naive metric z-score
ranking, and random. The shipped diagnosis model was fitted on the real incidents too, so their fault
types are scored again at the end with models that never saw them (leave-one-system-out and k-fold
within each system, each through `rca --diagnosis-model`).

    python benchmarks/bench_localization.py [--per-system 100] [--systems webshop,ticketing] [--seed 700000]
                                            [--no-model]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from _corpora import chaos_corpus, history_sample, nezha_corpus, tvdiag_corpus

from data_pipeline.chaos import ChaosConfig
from director.actors.base import RunSettings
from eval import train_gate, train_ranking
from eval.localization import (
    Scores,
    ablation_rankers,
    alert_count_ranker,
    baro_ranker,
    director_ranker,
    evaluate,
    format_table,
    last_change_ranker,
    random_ranker,
    zscore_ranker,
)
from eval.train_diagnosis import (
    DiagnosisTrainingConfig,
    Sample,
    collect_labelled_samples,
    collect_samples,
    held_out_model,
    load_samples,
    save_samples,
    stratified_folds,
)
from flipmoe.telemetry import find_incidents
from flipmoe.toolkits.diagnose import DiagnosisModel
from flipmoe.toolkits.ranking import RankingModel
from router.bundle import packaged_bundle
from router.gate import fit as gate_fit
from router.gate import fixed_gate

IN_SAMPLE = ("(type: in-sample, the shipped diagnosis model was fitted on these incidents; the held-out figures "
             "are in the fault-type section at the end)")


def rankers(with_model: bool) -> dict:
    chosen = {}
    bundle = packaged_bundle() if with_model else None
    if bundle is not None:
        chosen["flipmoe rca (shipped, nano bundle)"] = director_ranker(settings=RunSettings(bundle=bundle))
    chosen.update(ablation_rankers({
        "flipmoe rca, no model": ("metrics", "traces", "logs", "events"),
        "  metrics only": ("metrics",),
        "  traces only": ("traces",),
        "  logs only": ("logs",),
    }))
    chosen["naive metric z-score"] = zscore_ranker()
    chosen["BARO (onset given)"] = baro_ranker()
    chosen["random"] = random_ranker()
    return chosen


def run_tvdiag(systems: dict[str, Path], root: Path) -> None:
    """The TVDiag train cases, per system: alert events only, so no ablations. Nothing of the localisation
    is fitted to these systems, so its figures are out-of-system (leave-one-system-out holds trivially);
    the fault-type column is in-sample (the shipped diagnosis model was fitted on them: `run_fault_types`
    holds them out). The `--history` row gives `rca` the system's other cases as its alert history (their
    alerts only, no labels; an incident never counts in its own history)."""
    for system, folder in systems.items():
        incidents = find_incidents(folder)
        start = time.perf_counter()
        scores = evaluate(incidents, {"flipmoe rca, no model": director_ranker(settings=RunSettings()),
                                      "flipmoe rca --history": director_ranker(settings=RunSettings(history=folder)),
                                      "alert count": alert_count_ranker(), "random": random_ranker()})
        print(f"\n== TVDiag {system} (alert events): {len(incidents)} cases, evaluated in "
              f"{time.perf_counter() - start:.0f} s")
        print(format_table(scores))
        print(IN_SAMPLE)
        # How long a history is needed: k cases drawn (seed 0) as the history, the others scored against it.
        sizes = []
        for k in (5, 10, 20, 50):
            history, rest = history_sample(folder, k, root / "tvdiag-history" / f"{system}-{k}")
            rank = director_ranker(settings=RunSettings(history=history))
            hits = evaluate(rest, {"rca --history": rank})["rca --history"].summary()["service_A@1"]
            sizes.append(f"{k}: {hits:.3f} (n={len(rest)})")
        print(f"service A@1 with a history of k other cases: {', '.join(sizes)}")


CHANGE_FAULTS = ["code_exception", "code_wrong_result", "bad_config"]
"""Faults a deploy or a config change brings in."""


def rca_scores(paths: dict[str, Path], ids: Iterable[str], **settings: Any) -> Scores:
    """`rca` (the Director in this process) with `RunSettings(**settings)` over the incidents `ids` of `paths`
    (incident id -> directory); ids without a directory are skipped."""
    ranker = director_ranker(settings=RunSettings(**settings))
    return evaluate([paths[i] for i in sorted(ids) if i in paths], {"rca": ranker})["rca"]


def run_fault_types(root: Path, systems: dict[str, tuple[Path, bool]]) -> None:
    """Fault-type diagnosis of the real systems, each through `rca` with a model that never saw its
    labels: trained on chaos alone (the recipe before real data), on chaos and the *other* real systems
    (leave-one-system-out: what a system nobody labelled gets), on the system's other folds alone and on
    all of these together (5-fold within the system, 4 for the TrainTicket day: what a team with labelled
    past incidents gets from `flipmoe train diagnosis --incidents`, with and without `--no-chaos`).
    `systems`: name -> (folder, analyse with the folder as the alert history). The samples (features at
    the top suspect, as `rca` computes them) are collected once and cached under `root`."""
    chaos_file = root / "diagnosis-samples" / "chaos.jsonl"
    if not chaos_file.is_file():
        save_samples(collect_samples(DiagnosisTrainingConfig())[0], chaos_file)
    chaos = load_samples(chaos_file)
    real: dict[str, list] = {}
    for name, (folder, history) in systems.items():
        cached = root / "diagnosis-samples" / f"{name}.jsonl"
        if not cached.is_file():
            save_samples(collect_labelled_samples([folder], history_from_folder=history)[0], cached)
        real[name] = [replace(sample, system=name) for sample in load_samples(cached)]
    models = root / "diagnosis-models"
    models.mkdir(parents=True, exist_ok=True)
    print(f"\n== fault type on real systems: {len(chaos)} chaos samples, "
          f"{', '.join(f'{name} {len(samples)}' for name, samples in real.items())} real samples")
    for name, (folder, history) in systems.items():
        others = [sample for other, samples in real.items() if other != name for sample in samples]
        held_out_fault_types(name, folder, history, chaos, others, real[name], models)


def held_out_fault_types(name: str, folder: Path, history: bool, chaos: list[Sample], others: list[Sample],
                         own: list[Sample], models: Path) -> None:
    """One real system's rows of `run_fault_types`."""
    paths = {path.name: path for path in find_incidents(folder)}
    start = time.perf_counter()

    def through_rca(model: DiagnosisModel, file: str, ids: Iterable[str]) -> Scores:
        return rca_scores(paths, ids, history=folder if history else None,
                          diagnosis_model=model.save(models / f"{name}-{file}.json"))

    rows = {"chaos only": through_rca(held_out_model(chaos, lambda s: False), "chaos", paths),
            "chaos + other systems": through_rca(held_out_model(chaos + others, lambda s: False), "loso", paths)}
    alone, pooled, majority = Scores(), Scores(), []
    for k, fold in enumerate(stratified_folds(own, 4 if len(own) < 40 else 5)):
        def held_out(s: Sample, fold: set[str] = fold) -> bool:
            return s.system == name and s.incident in fold

        alone.extend(through_rca(held_out_model(own, held_out), f"own{k}", fold))
        pooled.extend(through_rca(held_out_model(chaos + others + own, held_out), f"pooled{k}", fold))
        seen = Counter(s.fault_type for s in own if s.incident not in fold).most_common(1)[0][0]
        majority += [s.fault_type == seen for s in own if s.incident in fold]
    rows["its other folds alone"] = alone
    rows["all of these"] = pooled
    print(f"\n{name}: {len(paths)} incidents ({time.perf_counter() - start:.0f} s); service A@1 is the same in "
          f"every row, only the fault type differs")
    print(f"{'trained on':<24} {'n':>4} {'svc@1':>7} {'type acc':>9} {'type F1':>8}")
    for label, scores in rows.items():
        summary = scores.summary()  # n: the fold rows score only incidents that gave a sample
        print(f"{label:<24} {summary['incidents']:>4} {summary['service_A@1']:>7.3f} "
              f"{summary['fault_type_accuracy']:>9.3f} {summary['fault_type_macro_f1']:>8.3f}")
    print(f"{'majority type (folds)':<24} {'':>7} {sum(majority) / max(len(majority), 1):>9.3f}")


def run_rankings(root: Path, systems: dict[str, tuple[Path, bool]], folds: int = 5) -> None:
    """Service and pod A@k of every real system through `rca --ranking-model`, the learned ranking fitted
    (`eval.train_ranking.fit`, as `flipmoe train ranking` fits) on the other real systems, or k-fold on the
    system's own other incidents (shuffled, seed 0), next to the fusion's order as shipped."""
    groups = {name: train_ranking.collect(find_incidents(folder), history_from_folder=history)
              for name, (folder, history) in systems.items()}
    models = root / "ranking-models"
    models.mkdir(parents=True, exist_ok=True)
    print("\n== the learned ranking on real systems, through rca --ranking-model (service A@1 / pod A@1, service A@3)")
    print(f"{'system':<13} {'n':>4}  {'fusion (shipped)':>17}  {'other systems':>17}  {'its other folds':>17}")
    for name, (folder, history) in systems.items():
        others = [g for other, gs in groups.items() if other != name for g in gs]
        ranking_rows(name, folder, history, groups[name], others, models, folds)


def ranking_rows(name: str, folder: Path, history: bool, own: list[train_ranking.Group],
                 others: list[train_ranking.Group], models: Path, folds: int) -> None:
    """One real system's row of `run_rankings`."""
    paths = {path.name: path for path in find_incidents(folder)}

    def through_rca(model: RankingModel | None, file: str, ids: Iterable[str]) -> Scores:
        return rca_scores(paths, ids, history=folder if history else None,
                          ranking_model=model.save(models / f"{name}-{file}.json") if model is not None else None)

    def cell(scores: Scores) -> str:
        summary = scores.summary()
        scored = "" if summary["incidents"] == len(paths) else f" (n={summary['incidents']})"
        return f"{summary['service_A@1']:.3f}/{summary['pod_A@1']:.3f} {summary['service_A@3']:.2f}{scored}"

    fusion = through_rca(None, "", paths)
    transferred = through_rca(train_ranking.fit(others), "others", paths)
    within = Scores()
    for k, fold in enumerate(train_ranking.shuffled_folds(len(own), min(folds, len(own)), seed=0)):
        held = {own[i].incident for i in fold}
        within.extend(through_rca(train_ranking.fit([g for g in own if g.incident not in held]), f"fold{k}", held))
    print(f"{name:<13} {len(paths):>4}  {cell(fusion):>17}  {cell(transferred):>17}  {cell(within):>17}")


def run_gate(root: Path, test: dict[str, Path], own: dict[str, Path | None], folds: int = 4) -> None:
    """The gate of the mixture (`router.gate`) against other ways of weighing the modalities, through `rca --gate`,
    on each system held out in turn. `test`: the system's scored incidents; `own`: other incidents of the same
    system to fit its own gate on (None: k-fold over `test`, shuffled, seed 0). A held-out system's gate is fitted
    (`eval.train_gate`, as `flipmoe train gate` fits) on the other systems' incidents, own and test alike, and the
    best single modality is chosen there. Events-only systems (TVDiag) are left out: with one modality a weight
    changes nothing."""
    models = root / "gate-models"
    models.mkdir(parents=True, exist_ok=True)
    pools = {name: train_gate.collect(find_incidents(folder)) for name, folder in test.items()}
    own_pools = {name: train_gate.collect(find_incidents(folder)) for name, folder in own.items() if folder}
    print("\n== the gate of the mixture, each system held out, through rca --gate (service A@1; the oracle counts "
          "an incident when any of the first four columns puts its root cause first)")
    columns = ("entropy rule (shipped)", "uniform", "best single", "learned, other systems", "learned, own", "oracle")
    print(f"{'system':<12} {'n':>4}  " + "  ".join(f"{c:>22}" for c in columns))
    for name, folder in test.items():
        train = [r for other in test if other != name for r in pools[other] + own_pools.get(other, [])]
        gate_row(name, folder, train, own_pools.get(name), pools[name], models, folds)


def gate_row(name: str, folder: Path, train: list[train_gate.GateRecord], own: list[train_gate.GateRecord] | None,
             mine: list[train_gate.GateRecord], models: Path, folds: int) -> None:
    """One system's row of `run_gate`: `train` from the other systems, `own` from the same system (None: k-fold
    over `mine`, its scored incidents)."""
    paths = {path.name: path for path in find_incidents(folder)}

    def through_rca(gate: Any, file: str, ids: Iterable[str] = paths) -> Scores:
        return rca_scores(paths, ids, gate=gate.save(models / f"{name}-{file}.json") if gate else None)

    chosen = train_gate.strategies(train, gate_fit([r.case for r in train]))
    single = next(k for k in chosen if k.startswith("best single"))
    rows = {"rule": through_rca(None, ""), "uniform": through_rca(fixed_gate(), "uniform"),
            "single": through_rca(chosen[single], "single"), "learned": through_rca(chosen["learned gate"], "others")}
    if own is not None:
        rows["own"] = through_rca(gate_fit([r.case for r in own]), "own")
    else:
        rows["own"] = Scores()
        for k, fold in enumerate(train_ranking.shuffled_folds(len(mine), min(folds, len(mine)), seed=0)):
            held = {mine[i].case.incident for i in fold}
            rows["own"].extend(through_rca(gate_fit([r.case for r in mine if r.case.incident not in held]),
                                           f"fold{k}", held))
    first = [rows[k].service_ranks for k in ("rule", "uniform", "single", "learned")]
    # Every column scored the same incidents in the same order (one that cannot be read is in none of them).
    oracle = sum(any(ranks[i] == 1 for ranks in first) for i in range(len(first[0]))) / max(len(first[0]), 1)
    cells = [f"{rows[k].summary()['service_A@1']:.3f}" for k in rows]
    cells[2] += f" ({single[len('best single ('):-1]})"
    cells[4] += " (k-fold)" if own is None else " (other seeds)"
    print(f"{name:<12} {len(paths):>4}  " + "  ".join(f"{c:>22}" for c in [*cells, f"{oracle:.3f}"]))


def run_changes(name: str, directory: Path) -> None:
    """Change-induced incidents shipped with a release train: several services deployed within a minute of
    the faulty change, only one of them faulty, so "the last change" cannot be the answer by itself."""
    incidents = find_incidents(directory)
    start = time.perf_counter()
    scores = evaluate(incidents, {"flipmoe rca, no model": director_ranker(settings=RunSettings()),
                                  "most recently changed service": last_change_ranker(), "random": random_ranker()})
    print(f"\n== {name}: {len(incidents)} incidents, evaluated in {time.perf_counter() - start:.0f} s")
    print(format_table(scores))


def run(name: str, directory: Path, with_model: bool) -> None:
    incidents = find_incidents(directory)
    start = time.perf_counter()
    scores = evaluate(incidents, rankers(with_model))
    print(f"\n== {name}: {len(incidents)} incidents, evaluated in {time.perf_counter() - start:.0f} s")
    print(format_table(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-system", type=int, default=100, help="chaos incidents per system")
    parser.add_argument("--systems", default="webshop,ticketing")
    parser.add_argument("--seed", type=int, default=700_000, help="seed base, never used during development")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers for generating the corpus")
    parser.add_argument("--keep", help="keep the corpus in this directory (and reuse it when it is complete)")
    parser.add_argument("--no-model", action="store_true", help="leave out the row with the packaged model bundle")
    parser.add_argument("--gate-train", type=int, default=30, metavar="N",
                        help="chaos incidents per system (training seeds 100000+) to fit the gate of each chaos system "
                             "on its own incidents (default 30; 0: leave the gate section out)")
    parser.add_argument("--changes", type=int, default=30, metavar="N",
                        help="change-induced incidents per system with a release train of innocent deploys "
                             "(default 30; 0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        chaos: dict[str, Path] = {}
        for offset, system in enumerate(s for s in args.systems.split(",") if s):
            out = chaos_corpus(root, system, args.per_system, seed=args.seed + 1000 * offset, workers=args.workers)
            run(f"chaos {system}", out, not args.no_model)
            chaos[system] = out
        if args.changes:
            # A release shipped at once (the innocent deploys within a minute of the faulty one, some after it:
            # "the last change" is mostly wrong), then one spread over 15 minutes (earlier changes of the day
            # mixed in: the last change is mostly right).
            for folder, spread, base in (("changes", 60.0, 30_000), ("changes-spread", 900.0, 40_000)):
                for offset, system in enumerate(s for s in args.systems.split(",") if s):
                    seed = args.seed + base + 1000 * offset
                    out = chaos_corpus(root / folder, system, args.changes, seed=seed, workers=args.workers,
                                       faults=CHANGE_FAULTS,
                                       config=ChaosConfig(release_train=3, release_spread_s=spread))
                    run_changes(f"chaos {system}, change-induced with 3 innocent deploys within {spread:.0f} s "
                                f"(seed {seed})", out)
        nezha = nezha_corpus(root)
        if nezha is not None:
            run("real TrainTicket day (Nezha, 28 faults)", nezha, not args.no_model)
            print(IN_SAMPLE)
        tvdiag = tvdiag_corpus(root)
        if tvdiag is not None:
            run_tvdiag(tvdiag, root)
        if nezha is not None or tvdiag is not None:
            systems = {"trainticket": (nezha, False)} if nezha is not None else {}
            systems.update({name: (folder, True) for name, folder in (tvdiag or {}).items()})
            run_fault_types(root, systems)
            run_rankings(root, systems)
        if args.gate_train:
            own: dict[str, Path | None] = {
                system: chaos_corpus(root / "gate-train", system, args.gate_train, seed=100_000 + 1000 * offset,
                                     workers=args.workers) for offset, system in enumerate(chaos)}
            test = dict(chaos)
            if nezha is not None:
                test["trainticket"], own["trainticket"] = nezha, None
            run_gate(root, test, own)
        if nezha is None or tvdiag is None:
            print("\n(../shared/data not found: the real data sets were skipped)")


if __name__ == "__main__":
    main()
