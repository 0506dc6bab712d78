"""How long does rendering an RCA report take? Prints seconds per report, wall and CPU, per plot.

For a chaos incident of the web shop (11 services) and of the ticketing system (46 services), the
analysis path's ranking is turned into an `RcaReport` (as the runtime does) and rendered: the first
call in the process (matplotlib imported then), the median of the warm calls, and the baseline
measured in the same run, `report.json` + `report.md` alone (no plots). CPU seconds are printed next
to wall seconds because a shared machine's wall clock includes waiting for a core. The goal is a
full render under 1.5 s.

    .venv/bin/python benchmarks/bench_render.py --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from data_pipeline.chaos import generate_incident
from director.agents.queries import Suspect, queries_for
from director.analysis import analyse_incident
from director.render import call_graph_plot, log_template_plot, metric_plot, render_markdown, write_report
from director.report import Evidence, RcaReport, RootCause, RunbookRecord
from flipmoe.telemetry import Incident


def report_of(incident: Incident) -> RcaReport:
    analysis = analyse_incident(incident)
    causes = []
    for rank, cause in enumerate(analysis.localization.root_causes[:5], 1):
        evidence = [Evidence(modality=s.modality, role=s.role, summary=s.summary, strength=s.strength,  # type: ignore[arg-type]
                             reference=dict(s.evidence)) for s in cause.evidence]
        metric = next((str(e.reference["metric"]) for e in evidence if "metric" in e.reference), None)
        diagnosis = analysis.diagnosis if rank == 1 else None
        causes.append(RootCause(rank=rank, service=cause.service, pod=cause.pod, node=cause.node, score=cause.score,
                                metric=metric, fault_type=diagnosis.fault_type if diagnosis else None,
                                evidence=evidence))
    queries = queries_for([Suspect(service=c.service, pod=c.pod, node=c.node, metric=c.metric) for c in causes[:3]],
                          window=incident.meta.window)
    return RcaReport(incident=incident.id, alert=incident.meta.alert, window=incident.meta.window.to_json(),
                     root_causes=causes, summary="benchmark", modalities_used=list(analysis.localization.modalities),
                     runbook=RunbookRecord(name="bench", source="generated:bench", text="step a: triage()"),
                     queries=queries.as_report(), timings_s=dict(analysis.timings))


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="warm renders per system")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    print(f"{'system':<12} {'render':<22} {'wall s':>7} {'cpu s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for system in ("webshop", "ticketing"):
            incident, _ = generate_incident(system, seed=args.seed)
            report = report_of(incident)
            out = Path(tmp) / system
            rows = {"full, first call": timed(lambda: write_report(report, incident, out))}  # noqa: B023
            warm = [timed(lambda: write_report(report, incident, out)) for _ in range(args.repeat)]  # noqa: B023
            rows["full, warm (median)"] = (statistics.median(w for w, _ in warm), statistics.median(c for _, c in warm))
            baseline = [timed(lambda: (report.to_json(), render_markdown(report))) for _ in range(args.repeat)]  # noqa: B023
            rows["json + md (baseline)"] = (statistics.median(w for w, _ in baseline),
                                            statistics.median(c for _, c in baseline))
            for name, plot in (("metric plot", lambda: metric_plot(report, incident)),  # noqa: B023
                               ("call-graph plot", lambda: call_graph_plot(report, incident)),  # noqa: B023
                               ("log-template plot", lambda: log_template_plot(report))):  # noqa: B023
                rows[name] = timed(plot)
            for name, (wall, cpu) in rows.items():
                print(f"{system:<12} {name:<22} {wall:>7.3f} {cpu:>7.3f}")


if __name__ == "__main__":
    main()
