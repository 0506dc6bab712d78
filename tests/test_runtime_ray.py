"""The runtime on a real local Ray (one small cluster for the whole file): parallel steps, a dead
worker's retry, timeouts, failures, several incidents in one warm runtime, and `flipmoe rca` on Ray."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import tiny_incident

from director.director import Director
from director.dsl import load_plan
from director.runtime import Interpreter, LocalExecutor, RayExecutor
from flipmoe.cli import main
from flipmoe.telemetry import write_incident

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    os.environ.setdefault("RAY_worker_niceness", "0")  # as director.runtime.start_ray does
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(ray_cluster):
    import rca_test_actors  # noqa: F401  (registers the test actors in this process as well)

    return RayExecutor(actor_modules=("rca_test_actors",))


def _run(text: str, executor):
    interpreter = Interpreter(load_plan(text), executor)
    executor.begin(tiny_incident(), Director(executor).settings)
    try:
        return interpreter, interpreter.run()
    finally:
        executor.end()


def test_parallel_steps_run_at_once(executor):
    _, result = _run('runbook p "p"\nparallel {\n  step a = test_sleep(seconds=1.5)\n'
                     '  step b = test_sleep(seconds=1.5)\n}\n', executor)
    a, b = result.steps
    assert a.status == b.status == "ok"
    assert b.started_s < a.started_s + a.duration_s and a.started_s < b.started_s + b.duration_s  # they overlap


def test_a_step_runs_after_the_statement_it_follows(executor):
    """Sequence is part of the plan: without a parallel block, independent steps do not overlap."""
    _, result = _run('runbook s "s"\nstep a = test_sleep(seconds=1)\nstep b = test_sleep(seconds=1)\n', executor)
    a, b = result.steps
    assert a.status == b.status == "ok"
    assert b.started_s >= a.started_s + a.duration_s - 0.05


def test_a_branch_runs_only_when_its_condition_holds(executor):
    _, result = _run('runbook i "i"\nstep t = triage()\nif "logs" in t.modalities {\n'
                     '  step yes = test_sleep(seconds=0.1)\n} else {\n  step no = test_sleep(seconds=0.1)\n}\n',
                     executor)
    assert [s.name for s in result.steps] == ["t", "yes"]
    assert any("then branch" in d.detail for d in result.decisions)


def test_a_dead_worker_is_replaced_and_the_step_rerun(executor, tmp_path):
    marker = tmp_path / "crashed"
    _, result = _run(f'runbook c "c"\nstep c = test_crash_once(marker="{marker}")\n', executor)
    assert marker.read_text() == "crashed once"
    assert result.steps[0].status == "ok" and "survived" not in (result.steps[0].error or "")


def test_timeouts_and_failures_become_gaps(executor):
    interpreter, result = _run('runbook t "t"\nstep nap = test_sleep(seconds=60) timeout 1s\n'
                               'step boom = test_boom()\nstep triage = triage()\n', executor)
    assert [s.status for s in result.steps] == ["timeout", "failed", "ok"]
    reasons = " ".join(g.reason for g in result.gaps)
    assert "cancelled" in reasons and "RuntimeError: boom" in reasons
    assert result.steps[0].duration_s < 30


def test_warm_runtime_analyses_several_incidents_like_the_local_executor(executor):
    ray_director, local_director = Director(executor), Director(LocalExecutor())
    for _ in range(2):
        on_ray, local = ray_director.analyse(tiny_incident()), local_director.analyse(tiny_incident())
        assert [(c.service, c.pod, c.fault_type) for c in on_ray.root_causes] == \
            [(c.service, c.pod, c.fault_type) for c in local.root_causes]
        # steps are listed by start time, and parallel ones start in any order on Ray
        assert sorted((s.name, s.status) for s in on_ray.runbook.steps) == \
            sorted((s.name, s.status) for s in local.runbook.steps)


def test_rca_command_on_ray(ray_cluster, tmp_path, capsys):
    write_incident(tiny_incident(), tmp_path / "incidents" / "tiny")
    assert main(["rca", str(tmp_path / "incidents"), "--json", "--out", str(tmp_path / "out"), "--no-model"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["incident"] == "tiny" and report["root_causes"]
    assert (tmp_path / "out" / "tiny" / "report.json").is_file()
    assert ray_cluster.is_initialized()  # the command leaves a Ray it did not start running
