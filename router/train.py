"""Training the router on oracle labels, and the figures that judge it.

The classifier is a multinomial logistic regression over the hashed n-gram features (a few thousand
labelled requests do not support more; it trains in seconds on two cores). Its regularisation is chosen
by cross-validation, its temperature is fitted on the out-of-fold predictions (so the confidence is
calibrated on requests the fitted weights did not see), and then it is refitted on all requests.
Each request is also shown without its task name, so the router routes requests that arrive bare.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

from data_pipeline.examples import TaskExample
from flipmoe.errors import FlipmoeInputError
from router.encoder import EncoderConfig, HashedNgramEncoder
from router.model import Router, RouterConfig, softmax
from router.oracle import OracleRecord, Progress, Scorer


@dataclass(kw_only=True, frozen=True)
class RouterTrainConfig:
    """How the router is fitted."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Request encoder."""
    c_grid: tuple[float, ...] = (0.3, 3.0, 30.0)
    """Inverse L2 strengths tried; the one with the best cross-validated accuracy (then log-loss) wins."""
    folds: int = 4
    """Cross-validation folds (out-of-fold predictions choose C and fit the temperature)."""
    task_dropout: bool = True
    """Train on every request twice: with its task name and without it."""
    threshold: float = 0.6
    """Confidence below which the router names fallback experts."""
    top_k: int = 2
    """Experts asked at low confidence."""
    seed: int = 0
    """Seed of the fold assignment."""

    def __post_init__(self) -> None:
        if not self.c_grid or min(self.c_grid) <= 0 or self.folds < 2:
            raise FlipmoeInputError("router training needs positive c_grid values and folds >= 2")


def fit_router(records: Sequence[OracleRecord], experts: Sequence[str], *,
               config: RouterTrainConfig = RouterTrainConfig(), progress: Progress | None = None) -> Router:
    """Fit the classifier to oracle `records` over `experts` (in this order)."""
    if not records:
        raise FlipmoeInputError("no labelled requests to train the router on",
                                hint="the experts' held-out task data is empty")
    started = time.perf_counter()
    experts = tuple(experts)
    index = {name: i for i, name in enumerate(experts)}
    unknown = sorted({r.label for r in records} - set(index))
    if unknown:
        raise FlipmoeInputError(f"oracle labels name experts the router does not know: {', '.join(unknown)}")
    encoder = HashedNgramEncoder(config.encoder)
    prompts = [r.example.input for r in records]
    tasks = [r.example.task for r in records]
    y_N = np.array([index[r.label] for r in records])
    x_NF = _training_matrix(encoder, prompts, tasks, task_dropout=config.task_dropout)
    y_rows = np.concatenate([y_N, y_N]) if config.task_dropout else y_N
    group_rows = np.tile(np.arange(len(records)), 2 if config.task_dropout else 1)

    folds = np.random.default_rng(config.seed).permutation(len(records)) % min(config.folds, len(records))
    fold_rows = folds[group_rows]
    best: tuple[float, float, float, np.ndarray] | None = None  # (accuracy, -log loss, C, oof logits)
    for c in config.c_grid:
        oof_RE = _out_of_fold_logits(x_NF, y_rows, fold_rows, c=c, n_experts=len(experts))
        accuracy = float((oof_RE.argmax(axis=1) == y_rows).mean())
        log_loss = _nll(oof_RE, y_rows, temperature=1.0)
        if progress:
            progress(f"router: C={c:g} cross-validated accuracy {accuracy:.3f}, log-loss {log_loss:.3f}")
        if best is None or (accuracy, -log_loss) > best[:2]:
            best = (accuracy, -log_loss, c, oof_RE)
    assert best is not None
    cv_accuracy, _, chosen_c, oof_RE = best
    temperature = fit_temperature(oof_RE, y_rows)
    weight_EF, bias_E = _fit_logistic(x_NF, y_rows, c=chosen_c, n_experts=len(experts))

    oof_probs = softmax(oof_RE / temperature)
    with_task = slice(0, len(records))
    card = {
        "kind": "flipmoe-router",
        "classifier": "multinomial logistic regression over hashed character n-grams (+ task name)",
        "requests": len(records),
        "label_counts": dict(Counter(r.label for r in records)),
        "tasks": dict(Counter(tasks)),
        "chosen_C": chosen_c,
        "temperature": temperature,
        "cross_validated": {
            "accuracy": cv_accuracy,
            "accuracy_with_task": float((oof_RE[with_task].argmax(axis=1) == y_N).mean()),
            "accuracy_without_task": (float((oof_RE[len(records):].argmax(axis=1) == y_N).mean())
                                      if config.task_dropout else None),
            "ece_uncalibrated": expected_calibration_error(softmax(oof_RE), y_rows),
            "ece": expected_calibration_error(oof_probs, y_rows),
            "log_loss": _nll(oof_RE, y_rows, temperature=temperature),
        },
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    router_config = RouterConfig(experts=experts, encoder=config.encoder, temperature=temperature,
                                 threshold=config.threshold, top_k=min(config.top_k, len(experts)))
    return Router(router_config, weight_EF, bias_E, card)


def _training_matrix(encoder: HashedNgramEncoder, prompts: list[str], tasks: list[str], *,
                     task_dropout: bool) -> sp.csr_matrix:
    with_task = encoder.encode(prompts, tasks)
    if not task_dropout:
        return with_task
    return sp.vstack([with_task, encoder.encode(prompts, None)], format="csr")


def _out_of_fold_logits(x_NF: sp.csr_matrix, y_N: np.ndarray, fold_N: np.ndarray, *, c: float,
                        n_experts: int) -> np.ndarray:
    oof_NE = np.zeros((x_NF.shape[0], n_experts), dtype=np.float64)
    for fold in np.unique(fold_N):
        held = fold_N == fold
        weight_EF, bias_E = _fit_logistic(x_NF[~held], y_N[~held], c=c, n_experts=n_experts)
        oof_NE[held] = np.asarray(x_NF[held] @ weight_EF.T) + bias_E
    return oof_NE


def _fit_logistic(x_NF: sp.csr_matrix, y_N: np.ndarray, *, c: float, n_experts: int,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Weights over all `n_experts` rows; experts absent from `y_N` get a bias that never wins."""
    weight_EF = np.zeros((n_experts, x_NF.shape[1]), dtype=np.float32)
    bias_E = np.full(n_experts, -30.0, dtype=np.float32)
    present = np.unique(y_N)
    if len(present) == 1:
        bias_E[present[0]] = 0.0
        return weight_EF, bias_E
    model = LogisticRegression(C=c, solver="newton-cg", max_iter=500)
    model.fit(x_NF, y_N)
    if len(present) == 2:
        # Binary sklearn models keep one row: p(second) = sigmoid(w.x + b) = softmax([0, w.x + b]).
        bias_E[present] = (0.0, float(model.intercept_[0]))
        weight_EF[present[1]] = model.coef_[0]
    else:
        weight_EF[present] = model.coef_
        bias_E[present] = model.intercept_
    return weight_EF, bias_E


def fit_temperature(logits_NE: np.ndarray, y_N: np.ndarray) -> float:
    """The softmax temperature that minimises the negative log-likelihood of `y_N` (temperature scaling)."""
    result = minimize_scalar(lambda log_t: _nll(logits_NE, y_N, temperature=math.exp(log_t)),
                             bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(result.x))


def _nll(logits_NE: np.ndarray, y_N: np.ndarray, *, temperature: float) -> float:
    probs_NE = softmax(logits_NE / temperature)
    return float(-np.log(np.clip(probs_NE[np.arange(len(y_N)), y_N], 1e-12, None)).mean())


def expected_calibration_error(probs_NE: np.ndarray, y_N: np.ndarray, *, bins: int = 10) -> float:
    """Mean gap between confidence and accuracy over equal-width confidence bins, weighted by bin size."""
    confidence_N = probs_NE.max(axis=1)
    correct_N = probs_NE.argmax(axis=1) == y_N
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence_N, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct_N[in_bin].mean() - confidence_N[in_bin].mean())
    return float(ece)


# -- figures ------------------------------------------------------------------------------------


def task_owners(experts: Mapping[str, Any]) -> dict[str, str]:
    """Task -> the expert fine-tuned on it (routing by task label); the first expert listing it wins."""
    owners: dict[str, str] = {}
    for name, expert in experts.items():
        config = getattr(expert, "config", None)
        for task in getattr(config, "tasks", ()) or ():
            owners.setdefault(task, name)
    return owners


def routing_figures(router: Router, records: Sequence[OracleRecord], *, owners: Mapping[str, str],
                    scorer: Scorer) -> dict[str, Any]:
    """Routing accuracy vs the oracle, and the task score each routing policy earns, on `records`.

    Policies: the router (with and without the task name), random routing (its expectation: every
    expert equally likely), routing by task label, and the oracle itself (the ceiling).
    """
    if not records:
        return {}
    experts = router.experts
    prompts = [r.example.input for r in records]
    tasks = [r.example.task for r in records]
    with_task = [d.expert for d in router.route(prompts, tasks)]
    bare = [d.expert for d in router.route(prompts, None)]
    by_label = [owners.get(r.example.task, experts[0]) for r in records]
    oracle = [r.label for r in records]
    probs_NE = router.probabilities(prompts, tasks)
    y_N = np.array([experts.index(r.label) for r in records])

    def accuracy(choice: list[str]) -> float:
        return float(np.mean([c == o for c, o in zip(choice, oracle, strict=True)]))

    def task_scores(choice: list[str]) -> dict[str, float]:
        return per_task_scores(records, [r.predictions[c] for r, c in zip(records, choice, strict=True)], scorer)

    random_scores = {name: task_scores([name] * len(records)) for name in experts}
    return {
        "requests": len(records),
        "accuracy": {"router": accuracy(with_task), "router_without_task": accuracy(bare),
                     "random": 1.0 / len(experts), "task_label": accuracy(by_label)},
        "ece": expected_calibration_error(probs_NE, y_N),
        "task_scores": {
            "router": task_scores(with_task),
            "router_without_task": task_scores(bare),
            "random": {t: float(np.mean([s[t] for s in random_scores.values()])) for t in sorted(set(tasks))},
            "task_label": task_scores(by_label),
            "oracle": task_scores(oracle),
            **{f"expert:{name}": s for name, s in random_scores.items()},
        },
    }


def per_task_scores(records: Sequence[OracleRecord], predictions: Sequence[str], scorer: Scorer,
                    ) -> dict[str, float]:
    """The task score of `predictions` (aligned with `records`), computed per task over all its requests."""
    grouped: dict[str, tuple[list[str], list[TaskExample]]] = {}
    for record, prediction in zip(records, predictions, strict=True):
        preds, examples = grouped.setdefault(record.example.task, ([], []))
        preds.append(prediction)
        examples.append(record.example)
    return {task: float(scorer(task, preds, examples)) for task, (preds, examples) in sorted(grouped.items())}
