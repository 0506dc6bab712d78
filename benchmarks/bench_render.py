"""How long does rendering an RCA report take? Prints seconds per report, wall and CPU, per plot.

For a chaos incident of the web shop (11 services) and of the ticketing system (46 services), the
report `flipmoe rca` writes (the Director in this process) is rendered: the first
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
from director.director import analyse_incident
from director.render import call_graph_plot, log_template_plot, metric_plot, render_markdown, write_report
from director.report import RcaReport
from flipmoe.telemetry import Incident


def report_of(incident: Incident) -> RcaReport:
    """The report `flipmoe rca` writes for the incident (the Director in this process, no model)."""
    return analyse_incident(incident)


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
