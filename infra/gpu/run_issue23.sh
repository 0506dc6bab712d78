#!/usr/bin/env bash
# Issue 23 in one go on a GPU machine: the megatron-core path run for real, with throughput and parity figures.
#
#   bash infra/gpu/run_issue23.sh prepare   # a CPU host with pip access: wheels + the logs expert's data
#   bash infra/gpu/run_issue23.sh           # the GPU machine (no network), from the repository root
#   FLIPMOE_GPU_DRY_RUN=1 bash infra/gpu/run_issue23.sh   # a CPU: every step with stand-ins (plumbing only)
#
# `prepare` writes build/issue23/ (ignored by git; carry it to the GPU machine, ~10 MiB):
#   wheels/  the megatron-core wheel for the GPU machine's Python (its image has CUDA torch, not megatron-core)
#   logs/    the nano logs expert's data as its build made it (needs ../shared/data, which does not travel)
#
# The run: steps in priority order, each under its own time limit inside one deadline
# (ISSUE23_DEADLINE_S, default 480 s), so a slow or failing step costs only its own figures:
#   preflight     CUDA torch and megatron-core importable (installs the carried wheel if needed), device, versions
#   pytest_gpu    pytest -m gpu: loss falls over a torchrun training, HF vs megatron logits, distributed
#                 checkpoint save -> load identical logits, checkpoint -> HF expert loaded by flipmoe
#   bench_125m    benchmarks/bench_megatron_train.py, preset 125m: tokens/s and MFU, megatron vs the HF trainer
#   logs_expert   benchmarks/bench_megatron_expert.py: logs expert at 125m for ISSUE23_LOGS_TOKENS tokens,
#                 converted back, scored next to the shipped nano expert
#   bench_1b      the same benchmark at preset 1b (micro-batch 2), last since memory may not allow it
# Figures go to $OUT/issue23_figures.md (+ .json), each step's log to $OUT/<step>.log (7 files at most),
# and the figures are printed at the end. ISSUE23_STEPS=bench_1b,logs_expert reruns only those steps.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
MODE=${1:-run}
DRY=${FLIPMOE_GPU_DRY_RUN:-0}
STATE=${ISSUE23_STATE:-build/issue23}
OUT=${OUT:-$REPO/out/issue23}
WORK=${ISSUE23_WORK:-/tmp/issue23}
DEADLINE_S=${ISSUE23_DEADLINE_S:-480}
STEPS=${ISSUE23_STEPS:-preflight,pytest_gpu,bench_125m,logs_expert,bench_1b}
LOGS_TOKENS=${ISSUE23_LOGS_TOKENS:-4000000}
if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python  # a developer checkout; the GPU image has python3
else PY=python3; fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
FIGURES=$OUT/issue23_figures.md

say() { echo "[issue23 ${SECONDS}s] $*"; }

# -- prepare: on a CPU host with pip access -------------------------------------------------------

if [[ $MODE == prepare ]]; then
  version=$("$PY" -c "import importlib.metadata as m; print(m.version('megatron-core'))" 2>/dev/null || echo 0.16.1)
  mkdir -p "$STATE/wheels"
  say "downloading megatron-core $version for CPython ${ISSUE23_PYVER:-3.12} (the GPU image's python3) into $STATE/wheels"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${ISSUE23_PYVER:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$STATE/wheels" "megatron-core==$version"
  say "writing the nano logs expert's data into $STATE/logs"
  "$PY" benchmarks/bench_megatron_expert.py prepare --out "$STATE/logs" $([[ $DRY == 1 ]] && echo --small)
  size_kib=$(du -sk "$STATE" | cut -f1)
  say "$STATE holds $((size_kib / 1024)) MiB (the working tree that travels is limited to 64 MiB in all)"
  say "next: run(command=\"bash infra/gpu/run_issue23.sh\", carry=[\"$STATE\"], timeout_s=540)"
  exit 0
fi
[[ $MODE == run ]] || { echo "usage: $0 [prepare|run]" >&2; exit 2; }

# -- run -------------------------------------------------------------------------------------------

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
if [[ $DRY == 1 ]]; then
  BANNER="DRY RUN on ${HOSTNAME:-this host}: CPU stand-ins walk every step; no figure here is a GPU measurement"
else
  BANNER="GPU run on ${HOSTNAME:-the device machine}"
fi
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
  git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
else
  commit="unknown (no .git here)"
fi
{
  echo "# Issue 23 figures"
  echo
  echo "$BANNER. Started $(date -u +%FT%TZ); commit $commit; python $PY; deadline ${DEADLINE_S}s."
  echo
} >"$FIGURES"
say "$BANNER"

wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

merge_json() {  # every step's figures in one file
  "$PY" - "$WORK" "$OUT/issue23_figures.json" <<'PY' || true
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
figures = {p.stem: json.loads(p.read_text()) for p in sorted(work.glob("*.json"))}
out.write_text(json.dumps(figures, indent=2) + "\n")
PY
}

# run_step NAME BUDGET_S COMMAND...: its output to $OUT/NAME.log, its figures ($WORK/NAME.md) or its log's
# tail to the figures file, whatever the exit status.
run_step() {
  local name=$1 budget=$2
  shift 2
  wanted "$name" || return 0
  local left=$((DEADLINE_S - SECONDS - 10))
  local limit=$((budget < left ? budget : left))
  if ((limit < 30)); then
    say "$name: skipped, ${left}s left before the deadline"
    printf '## %s: skipped (%ss left before the %ss deadline)\n\n' "$name" "$left" "$DEADLINE_S" >>"$FIGURES"
    return 0
  fi
  say "$name (limit ${limit}s): $*"
  local began=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - began)) status=ok
  if ((rc == 124 || rc == 137)); then status="timed out after ${limit}s"
  elif ((rc != 0)); then status="failed (exit $rc)"; fi
  say "$name: $status in ${took}s"
  printf '## %s: %s, %ss\n\n' "$name" "$status" "$took" >>"$FIGURES"
  if [[ -n ${AFTER_STEP:-} ]]; then "$AFTER_STEP" || true; fi
  if [[ -s $WORK/$name.md ]]; then cat "$WORK/$name.md" >>"$FIGURES"; echo >>"$FIGURES"; fi
  if [[ $status != ok || ! -s $WORK/$name.md ]]; then
    { echo "Last lines of $name.log:"; echo '```'; tail -n 25 "$OUT/$name.log"; echo '```'; echo; } >>"$FIGURES"
  fi
  merge_json
  return 0
}

# -- preflight: what the machine has, the carried wheel installed where needed ---------------------

preflight() {
  "$PY" - "$DRY" "$WORK/preflight.md" "$WORK/preflight.json" <<'PY'
import importlib, importlib.metadata as md, json, platform, sys
dry, md_path, json_path = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
facts = {"python": f"{sys.executable} {platform.python_version()}", "dry_run": dry}
def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None
try:
    import torch
except Exception as err:  # noqa: BLE001
    print(f"issue23: torch is not importable by {sys.executable} ({type(err).__name__}: {err}): nothing to measure")
    sys.exit(3)
facts["torch"] = torch.__version__
facts["cuda_available"] = torch.cuda.is_available()
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    facts.update(device=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                 capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                 bf16=torch.cuda.is_bf16_supported())
missing = []
for module, dist in (("megatron.core", "megatron-core"), ("transformers", "transformers"),
                     ("sentencepiece", "sentencepiece"), ("yaml", "PyYAML"), ("safetensors", "safetensors"),
                     ("pandas", "pandas"), ("pyarrow", "pyarrow"), ("pytest", "pytest"),
                     ("pytest_timeout", "pytest-timeout")):
    try:
        importlib.import_module(module)
        facts[dist] = version(dist) or "importable"
    except Exception as err:  # noqa: BLE001
        facts[dist] = None
        missing.append(f"{dist} ({type(err).__name__}: {str(err)[:120]})")
facts["transformer-engine"] = version("transformer-engine") or version("transformer_engine")
facts["missing"] = missing
rows = "\n".join(f"| {k} | {v} |" for k, v in facts.items())
open(md_path, "w").write(f"| what | found |\n|---|---|\n{rows}\n")
open(json_path, "w").write(json.dumps(facts, indent=2) + "\n")
print(json.dumps(facts, indent=2))
if not dry and not torch.cuda.is_available():
    print(f"issue23: no CUDA GPU is visible to {sys.executable} (torch {torch.__version__}): nothing to measure")
    sys.exit(3)
if missing:
    print("issue23: missing here: " + "; ".join(missing))
    sys.exit(4)
PY
}

install_wheels() {
  local wheels=("$STATE"/wheels/*.whl)
  if [[ ! -e ${wheels[0]} ]]; then
    say "no wheels in $STATE/wheels: run 'bash infra/gpu/run_issue23.sh prepare' where pip works and carry $STATE"
    return 1
  fi
  say "installing ${#wheels[@]} carried wheel(s) (--no-deps: the image's torch stays)"
  if "$PY" -m pip install -q --no-index --no-deps --no-cache-dir "${wheels[@]}"; then return 0; fi
  # A read-only environment: beside it. Subprocesses that replace PYTHONPATH (test_megatron.py's torchrun
  # test) will not see it there.
  "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --target "$WORK/site" "${wheels[@]}" || return 1
  export PYTHONPATH="$WORK/site:$PYTHONPATH"
}

if wanted preflight || [[ $DRY != 1 ]]; then
  rc=0
  preflight >"$OUT/preflight.log" 2>&1 || rc=$?
  if ((rc == 4)) && [[ $DRY != 1 ]] && grep -q "megatron-core (" "$OUT/preflight.log"; then
    install_wheels >>"$OUT/preflight.log" 2>&1 || true
    rc=0
    preflight >>"$OUT/preflight.log" 2>&1 || rc=$?
  fi
  printf '## preflight: %s\n\n' "$([[ $rc == 0 ]] && echo ok || echo "failed (exit $rc)")" >>"$FIGURES"
  cat "$WORK/preflight.md" >>"$FIGURES" 2>/dev/null || true
  echo >>"$FIGURES"
  merge_json
  if ((rc != 0)); then
    line=$(grep '^issue23:' "$OUT/preflight.log" | tail -n 1 || true)
    echo "${line:-issue23: preflight failed (exit $rc), see preflight.log}" | tee -a "$FIGURES"
    tail -n 20 "$OUT/preflight.log"
    exit "$rc"
  fi
  say "preflight ok: $(grep -m1 '"device"' "$OUT/preflight.log" || echo 'no GPU (dry run)')"
fi

# -- the steps -----------------------------------------------------------------------------------

DRY_FLAG=()
if [[ $DRY == 1 ]]; then DRY_FLAG=(--dry-run); fi

pytest_summary() {  # outcome and time per test, and the training test's loss lines
  "$PY" - "$WORK/pytest_gpu.xml" "$WORK/pytest_gpu.md" "$WORK/pytest_gpu.json" <<'PY'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path
xml_path, md_path, json_path = map(Path, sys.argv[1:4])
if not xml_path.is_file():
    sys.exit(0)
rows, losses = [], []
for case in ET.parse(xml_path).getroot().iter("testcase"):
    outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
    rows.append({"test": f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}", "outcome": outcome,
                 "seconds": round(float(case.get("time", 0)), 1)})
    out = case.findtext("system-out") or ""
    losses += [line for line in out.splitlines() if line.startswith("step ")]
lines = ["| test | outcome | s |", "|---|---|---|"] + [f"| {r['test']} | {r['outcome']} | {r['seconds']} |" for r in rows]
if losses:
    lines += ["", "Training test (torchrun, megatron-core):", "```", *losses, "```"]
md_path.write_text("\n".join(lines) + "\n")
json_path.write_text(json.dumps({"tests": rows, "training_log": losses}, indent=2) + "\n")
PY
}

AFTER_STEP=pytest_summary run_step pytest_gpu 200 \
  "$PY" -m pytest -m gpu tests/test_megatron.py tests/test_megatron_gpu.py -rA -p no:cacheprovider \
  --timeout=170 --junitxml="$WORK/pytest_gpu.xml" -o junit_logging=system-out

run_step bench_125m 120 \
  "$PY" benchmarks/bench_megatron_train.py --preset 125m --micro-batch 8 --seq-len 2048 --steps 30 --warmup 5 \
  --json "$WORK/bench_125m.json" --markdown "$WORK/bench_125m.md" "${DRY_FLAG[@]}"

if wanted logs_expert; then
  LOGS_DATA=$STATE/logs
  LOGS_ARGS=(--tokens "$LOGS_TOKENS")
  if [[ $DRY == 1 ]]; then
    if [[ ! -f $LOGS_DATA/meta.json ]]; then
      LOGS_DATA=$WORK/logs-small
      say "dry run: no prepared data in $STATE/logs, writing a small stand-in set to $LOGS_DATA"
      "$PY" benchmarks/bench_megatron_expert.py prepare --small --out "$LOGS_DATA" >"$WORK/prepare.log" 2>&1
    fi
    LOGS_ARGS=(--preset nano --tokens 8192 --micro-batch 4 --max-examples 3 --dry-run)
  fi
  if [[ -f $LOGS_DATA/meta.json ]]; then
    run_step logs_expert 150 \
      "$PY" benchmarks/bench_megatron_expert.py run --data "$LOGS_DATA" --work "$WORK/logs_expert" "${LOGS_ARGS[@]}" \
      --json "$WORK/logs_expert.json" --markdown "$WORK/logs_expert.md"
  else
    say "logs_expert: skipped, no prepared data in $STATE/logs"
    printf '## logs_expert: skipped: no %s/logs (run `bash infra/gpu/run_issue23.sh prepare` on a CPU host with ../shared/data, and carry %s)\n\n' \
      "$STATE" "$STATE" >>"$FIGURES"
  fi
fi

run_step bench_1b 120 \
  "$PY" benchmarks/bench_megatron_train.py --preset 1b --micro-batch 2 --seq-len 2048 --steps 20 --warmup 5 \
  --json "$WORK/bench_1b.json" --markdown "$WORK/bench_1b.md" "${DRY_FLAG[@]}"

say "done in ${SECONDS}s; figures in $FIGURES"
echo
cat "$FIGURES"
