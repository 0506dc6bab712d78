"""FlipMoE against its parts and against a dense model of the same size and compute, in one run.

On held-out requests of every task (the bundle's held-out split, the half its router never saw):
- routing accuracy against the oracle (the expert whose answer scores best), for the router with and
  without the task name, random routing, and routing by task label;
- per-task scores of FlipMoE (with and without low-confidence ensembling), each single expert, the
  routing policies, the oracle (the ceiling), and a single dense decoder with as many parameters as all
  the experts together, trained on the union of their data for the same FLOPs (`eval/dense_baseline.py`);
- routing overhead per request and end-to-end generate latency;
- with `--encoders`, the router encoders side by side (hashed n-gram variants, and WordLlama's static
  embeddings when that package is installed) on the same oracle labels.

    python benchmarks/bench_router.py --bundle build/bundle-nano [--dense build/dense-nano] [--encoders]

The dense baseline is trained into `--dense` when that directory holds none (about as long as the
experts took to train). Timings on a shared 2-core machine are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="the bundle (default: flipmoe's default bundle)")
    parser.add_argument("--dense", default="build/dense-nano", help="dense baseline checkpoint (trained if missing)")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    parser.add_argument("--requests-per-task", type=int, help="held-out requests per task (default: the bundle's)")
    parser.add_argument("--latency-requests", type=int, default=24, help="requests timed one at a time")
    parser.add_argument("--encoders", action="store_true", help="compare router encoders on the same labels")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args()

    from router.bundle import ensure_bundle, heldout_requests, load_bundle, moe_answers, sources_of, training_answers
    from router.moe import FlipMoE
    from router.oracle import default_scorer, generate_all, label_requests, split_records, task_budgets
    from router.train import per_task_scores, routing_figures, task_owners

    bundle = ensure_bundle(args.bundle)
    experts, router, manifest = load_bundle(bundle)
    config = manifest.get("config", {})
    sources = sources_of(manifest)
    per_task = args.requests_per_task or config.get("router_requests_per_task", 48)
    max_new_tokens = config.get("max_new_tokens", 96)
    scorer = default_scorer()
    figures: dict[str, Any] = {"bundle": str(bundle)}

    started = time.perf_counter()
    examples = heldout_requests(sources, per_task=per_task)
    references = training_answers(sources)
    records = label_requests(experts, examples, references=references, max_new_tokens=max_new_tokens, progress=say)
    train_records, test = split_records(records, test_fraction=config.get("test_fraction", 0.5))
    say(f"oracle labels: {len(records)} requests in {time.perf_counter() - started:.0f} s; "
        f"{len(test)} in the router's held-out half")

    routing = routing_figures(router, test, owners=task_owners(experts), scorer=scorer)
    scores = routing["task_scores"]
    moe = FlipMoE(experts, router)
    for name, ensemble in (("flipmoe", True), ("flipmoe_top1", False)):
        outputs = moe_answers(moe, test, references=references, max_new_tokens=max_new_tokens, ensemble=ensemble)
        scores[name] = per_task_scores(test, [o.text for o in outputs], scorer)
        if ensemble:
            routing["ensembled_requests"] = sum(bool(o.candidates) for o in outputs)

    if not args.no_dense:
        dense = _dense(Path(args.dense), experts, sources)
        budgets = task_budgets({**experts, "dense": dense}, references, cap=max_new_tokens)
        answers = generate_all(dense, [r.example for r in test], budgets=budgets, max_new_tokens=max_new_tokens)
        scores["dense"] = per_task_scores(test, answers, scorer)
        # Compute is compared with the bundle's experts as they are, whatever the baseline was sized from.
        expert_flops = sum(6 * e.num_parameters() * e.card.get("training", {}).get("tokens_seen", 0)
                           for e in experts.values())
        dense_tokens = dense.card.get("training", {}).get("tokens_seen", 0)
        figures["dense"] = {"parameters": dense.num_parameters(), "tokens_seen": dense_tokens,
                            "experts_parameters": sum(e.num_parameters() for e in experts.values()),
                            "flops_vs_experts": round(6 * dense.num_parameters() * dense_tokens / expert_flops, 3)
                            if expert_flops else None}

    figures["routing"] = routing
    figures["latency"] = _latency(moe, test, references, max_new_tokens=max_new_tokens, n=args.latency_requests)
    if args.encoders:
        figures["encoders"] = _encoders(train_records, test, router.experts, owners=task_owners(experts))

    _print(figures, experts)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")


def _dense(directory: Path, experts: dict[str, Any], sources: Any) -> Any:
    from eval.dense_baseline import build_dense_baseline
    from experts.expert import Expert

    if (directory / "model.safetensors").is_file():
        say(f"dense baseline: {directory}")
        return Expert.from_checkpoint(directory)
    say(f"dense baseline: training into {directory}")
    return build_dense_baseline(experts, directory, sources=sources, progress=True, say=say)


def _latency(moe: Any, records: list[Any], references: dict[str, list[str]], *, max_new_tokens: int,
             n: int) -> dict[str, Any]:
    """Router time per request (alone and batched), and generate() end to end vs the chosen expert alone."""
    from router.oracle import fit_prompt, task_budgets

    prompts = [r.example.input for r in records]
    tasks = [r.example.task for r in records]
    moe.router.route(prompts[:4], tasks[:4])  # warm-up
    alone = []
    for prompt, task in zip(prompts[:200], tasks[:200], strict=False):
        t0 = time.perf_counter()
        moe.router.route([prompt], [task])
        alone.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    moe.router.route(prompts, tasks)
    batched = (time.perf_counter() - t0) * 1000 / len(prompts)

    budgets = task_budgets(moe.experts, references, cap=max_new_tokens)
    step = max(1, len(records) // n)
    picked = records[::step][:n]
    end_to_end, direct = [], []
    for record in picked:
        task = record.example.task
        budget = budgets.get(task, max_new_tokens)
        t0 = time.perf_counter()
        out = moe.generate(record.example.input, task=task, max_new_tokens=budget, ensemble=False)
        end_to_end.append((time.perf_counter() - t0) * 1000)
        expert = moe.experts[out.expert]
        prompt = fit_prompt(expert, record.example.input, task=task, max_new_tokens=budget)
        t0 = time.perf_counter()
        expert.generate(prompt, task=task, max_new_tokens=budget)
        direct.append((time.perf_counter() - t0) * 1000)
    return {
        "route_ms_single": _summary(alone), "route_ms_batched_per_request": round(batched, 3),
        "generate_ms_flipmoe": _summary(end_to_end), "generate_ms_expert_direct": _summary(direct),
        "requests": len(picked),
    }


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(values), 3), "p50": round(ordered[len(ordered) // 2], 3),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3)}


def _encoders(train: list[Any], test: list[Any], experts: tuple[str, ...], *, owners: dict[str, str],
              ) -> dict[str, Any]:
    """Each encoder + the same classifier recipe on the same oracle labels: accuracy on the test half,
    with and without the task name, plus how well it tells the task's family from the text alone."""
    from dataclasses import replace

    from router.encoder import EncoderConfig
    from router.train import RouterTrainConfig, fit_router

    results: dict[str, Any] = {}
    variants = {
        "char 2-4 (default)": EncoderConfig(),
        "char 1-3": EncoderConfig(ngram_min=1, ngram_max=3),
        "char_wb 2-5": EncoderConfig(analyzer="char_wb", ngram_max=5),
        "word 1-2": EncoderConfig(analyzer="word", ngram_min=1, ngram_max=2),
    }
    family_train = [replace(r, label=owners.get(r.example.task, r.label)) for r in train]
    for name, encoder in variants.items():
        t0 = time.perf_counter()
        router = fit_router(train, experts, config=RouterTrainConfig(encoder=encoder))
        fit_s = time.perf_counter() - t0
        text_only = replace(encoder, task_features=0)  # the family is in the task name: read the text alone
        family = fit_router(family_train, experts, config=RouterTrainConfig(encoder=text_only, task_dropout=False))
        results[name] = _encoder_scores(router, family, test, owners, fit_s=fit_s)
    results["wordllama 256-d"] = _wordllama(train, family_train, test, experts, owners)
    return results


def _encoder_scores(router: Any, family: Any, test: list[Any], owners: dict[str, str], *, fit_s: float,
                    ) -> dict[str, float]:
    prompts = [r.example.input for r in test]
    tasks = [r.example.task for r in test]
    t0 = time.perf_counter()
    bare = router.route(prompts)
    encode_ms = (time.perf_counter() - t0) * 1000 / len(prompts)
    return {
        "accuracy": float(np.mean([d.expert == r.label for d, r in zip(router.route(prompts, tasks), test,
                                                                        strict=True)])),
        "accuracy_without_task": float(np.mean([d.expert == r.label for d, r in zip(bare, test, strict=True)])),
        "family_from_text": float(np.mean([d.expert == owners.get(r.example.task) for d, r in
                                           zip(family.route(prompts), test, strict=True)])),
        "route_ms": round(encode_ms, 3), "fit_s": round(fit_s, 2),
    }


def _wordllama(train: list[Any], family_train: list[Any], test: list[Any], experts: tuple[str, ...],
               owners: dict[str, str]) -> dict[str, Any]:
    """WordLlama's static token embeddings (shipped inside its wheel), mean-pooled, + logistic regression."""
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError:
        return {"skipped": "pip install wordllama to compare it"}
    from sklearn.linear_model import LogisticRegression

    # The wheel ships its tokenizer under tokenizers/ but looks under tokenizer/; point its cache there.
    model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    index = {e: i for i, e in enumerate(experts)}

    def fit(rows: list[Any]) -> Any:
        x = model.embed([r.example.input for r in rows])
        y = [index[r.label] for r in rows]
        if len(set(y)) < 2:
            return None
        return LogisticRegression(C=3.0, max_iter=2000).fit(x, y)

    t0 = time.perf_counter()
    classifier = fit(train)
    fit_s = time.perf_counter() - t0
    family = fit(family_train)
    t0 = time.perf_counter()
    x_test = model.embed([r.example.input for r in test])
    encode_ms = (time.perf_counter() - t0) * 1000 / len(test)
    y = np.array([index[r.label] for r in test])
    y_family = np.array([index.get(owners.get(r.example.task, ""), -1) for r in test])
    return {
        "accuracy_without_task": float((classifier.predict(x_test) == y).mean()) if classifier else None,
        "family_from_text": float((family.predict(x_test) == y_family).mean()) if family else None,
        "route_ms": round(encode_ms, 3), "fit_s": round(fit_s, 2),
    }


def _print(figures: dict[str, Any], experts: dict[str, Any]) -> None:
    routing = figures["routing"]
    print(f"\n== routing on {routing['requests']} held-out requests the router never saw "
          f"(oracle = the expert whose answer scores best)")
    for name, value in routing["accuracy"].items():
        print(f"  {name:<22} accuracy vs oracle {value:.3f}")
    print(f"  router ECE {routing['ece']:.3f}; requests answered by two experts (low confidence): "
          f"{routing.get('ensembled_requests', 0)}")

    scores = routing["task_scores"]
    columns = ["flipmoe", "flipmoe_top1", "task_label", "random", "oracle",
               *[c for c in scores if c.startswith("expert:")], *(["dense"] if "dense" in scores else [])]
    tasks = sorted(scores["oracle"])
    print("\n== per-task held-out scores")
    print(f"  {'task':<20}" + "".join(f"{c.replace('expert:', ''):>13}" for c in columns))
    for task in tasks:
        print(f"  {task:<20}" + "".join(f"{scores[c].get(task, float('nan')):>13.3f}" for c in columns))
    print(f"  {'mean':<20}" + "".join(f"{np.mean([scores[c].get(t, 0.0) for t in tasks]):>13.3f}" for c in columns))
    params = {name: e.num_parameters() for name, e in experts.items()}
    print(f"\n  parameters: experts {params} = {sum(params.values()):,} total")
    if "dense" in figures:
        d = figures["dense"]
        print(f"  dense: {d['parameters']:,} parameters ({d['experts_parameters']:,} in the experts), "
              f"{d['tokens_seen']:,} training tokens, {d['flops_vs_experts']}x the experts' training FLOPs")

    lat = figures["latency"]
    print(f"\n== latency ({lat['requests']} requests one at a time; shared 2-core machine)")
    print(f"  routing per request: alone {lat['route_ms_single']}, in a batch {lat['route_ms_batched_per_request']}")
    print(f"  generate end to end: flipmoe {lat['generate_ms_flipmoe']}")
    print(f"                       chosen expert directly {lat['generate_ms_expert_direct']}")

    if "encoders" in figures:
        print("\n== router encoders on the same oracle labels (test half)")
        for name, row in figures["encoders"].items():
            print(f"  {name:<20} " + ", ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
