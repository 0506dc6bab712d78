"""Trainable relevance (DevOps vs off-domain) and quality (well-formed vs corrupted) classifiers.

Both are logistic regressions over hashed word uni- and bigrams, punctuation marks counting as words
(scikit-learn's `HashingVectorizer`,
which has no vocabulary to store), so a model is its weights: saved as a small `.npz` and applied in
any worker without pickles. `evaluate` reports precision and recall on held-out samples.

Labelled samples are built from what every checkout has, no downloads:
- DevOps (relevant): chaos-gym documents (logs, traces, metrics, code, deploy configs), the runbooks
  of the director's knowledge base, and the LogHub samples shipped as test fixtures;
- off-domain: docstrings of Python standard-library modules far from operations (numbers, dates,
  text, games), the dataset descriptions bundled with scikit-learn, and the licence texts under
  /usr/share/common-licenses when the machine has them.
- quality negatives are synthetic corruptions of relevant documents (character noise, mojibake, word
  salad, encoded blobs, boilerplate); the positives are the same documents uncorrupted.
Samples are split into training and held-out parts by *group* (a source file, a module, an incident),
so a held-out score is never earned on a near copy of a training sample.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_MAX_CHARS = 3000
_N_FEATURES = 1 << 18
_OFFDOMAIN_MODULES = ("fractions", "statistics", "calendar", "colorsys", "difflib", "textwrap", "turtle",
                      "random", "decimal", "string", "heapq", "bisect", "cmath", "math", "numbers",
                      "locale", "gettext", "wave", "html", "email.message", "json", "csv", "datetime",
                      "itertools", "functools", "operator", "unicodedata", "pprint", "enum", "graphlib")
_LICENSES = Path("/usr/share/common-licenses")
_REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LabelledSample:
    text: str
    label: int
    """1: relevant / well-formed; 0: off-domain / corrupted."""
    group: str
    """Samples of one group (file, module, incident) share a split."""


class TextClassifier:
    """Logistic regression over hashed word 1-2-grams of the first 3000 characters.

    Words rather than character n-grams: as accurate on these tasks and about four times faster,
    since scikit-learn's character analyzer is pure Python.
    """

    def __init__(self, coef: np.ndarray, intercept: float) -> None:
        self.coef = coef.astype(np.float32)
        self.intercept = float(intercept)

    @staticmethod
    def _vectorizer():  # type: ignore[no-untyped-def]
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b|[^\w\s]",
                                 n_features=_N_FEATURES, alternate_sign=False, norm="l2", lowercase=True)

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[int], *, c: float = 4.0) -> TextClassifier:
        from sklearn.linear_model import LogisticRegression

        features = cls._vectorizer().transform([t[:_MAX_CHARS] for t in texts])
        model = LogisticRegression(C=c, max_iter=1000, class_weight="balanced", solver="liblinear")
        model.fit(features, np.asarray(labels))
        return cls(model.coef_[0], model.intercept_[0])

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Probability of the positive class for each text."""
        if not len(texts):
            return np.zeros(0)
        features = self._vectorizer().transform([t[:_MAX_CHARS] for t in texts])
        logits = features @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, coef=self.coef, intercept=np.float64(self.intercept))

    @classmethod
    def load(cls, path: str | Path) -> TextClassifier:
        with np.load(path) as data:
            return cls(data["coef"], float(data["intercept"]))


def split_by_group(samples: Sequence[LabelledSample], heldout_fraction: float = 0.25
                   ) -> tuple[list[LabelledSample], list[LabelledSample]]:
    """(train, heldout), each group wholly on one side, decided by a hash of its name."""
    def heldout(group: str) -> bool:
        return int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < heldout_fraction
    train = [s for s in samples if not heldout(s.group)]
    test = [s for s in samples if heldout(s.group)]
    return train, test


def evaluate(classifier: TextClassifier, samples: Sequence[LabelledSample], threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall and F1 of the positive class (and of the negative class: what a filter removes)."""
    predicted = classifier.scores([s.text for s in samples]) >= threshold
    truth = np.asarray([s.label == 1 for s in samples])
    tp, fp = int((predicted & truth).sum()), int((predicted & ~truth).sum())
    fn, tn = int((~predicted & truth).sum()), int((~predicted & ~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "negative_precision": tn / (tn + fn) if tn + fn else 0.0,
            "negative_recall": tn / (tn + fp) if tn + fp else 0.0,
            "positives": int(truth.sum()), "negatives": int((~truth).sum())}


def train_and_evaluate(samples: Sequence[LabelledSample], *, heldout_fraction: float = 0.25
                       ) -> tuple[TextClassifier, dict[str, float]]:
    """Fit on the training groups, score on the held-out groups."""
    train, test = split_by_group(samples, heldout_fraction)
    classifier = TextClassifier.fit([s.text for s in train], [s.label for s in train])
    return classifier, {**evaluate(classifier, test), "train_samples": len(train), "heldout_samples": len(test)}


# --- labelled samples -------------------------------------------------------------------------------


def _paragraph_chunks(text: str, size: int = 1200) -> list[str]:
    chunks, current = [], ""
    for paragraph in text.split("\n\n"):
        if current and len(current) + len(paragraph) > size:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return [c for c in chunks if len(c) >= 200]


def offdomain_texts() -> list[tuple[str, str]]:
    """(group, text) of off-domain prose available on any machine (plus licences where present)."""
    out: list[tuple[str, str]] = []
    for name in _OFFDOMAIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        docs = [inspect.getdoc(module) or ""]
        docs += [inspect.getdoc(obj) or "" for _, obj in inspect.getmembers(module)
                 if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", "") == name]
        out += [(f"stdlib:{name}", chunk) for chunk in _paragraph_chunks("\n\n".join(d for d in docs if d))]
    import sklearn.datasets

    for path in sorted((Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst")):
        out += [(f"sklearn:{path.stem}", chunk) for chunk in _paragraph_chunks(path.read_text(encoding="utf-8"))]
    if _LICENSES.is_dir():
        for path in sorted(p for p in _LICENSES.iterdir() if p.is_file() and not p.is_symlink()):
            text = path.read_text(encoding="utf-8", errors="replace")
            out += [(f"license:{path.name}", chunk) for chunk in _paragraph_chunks(text)]
    return out


def devops_texts(*, incidents: int = 2, seed: int = 590_000) -> list[tuple[str, str]]:
    """(group, text) of DevOps content: chaos-gym documents, runbooks, LogHub fixture logs."""
    from data_pipeline.config import SourceConfig
    from data_pipeline.sources import ReadTask, read_task

    out: list[tuple[str, str]] = []
    chaos = SourceConfig(name="chaos-labelled", kind="chaos", system="webshop", incidents=incidents, seed=seed,
                         window_minutes=4, traces_per_incident=20)
    for i in range(incidents):
        for doc in read_task(ReadTask(chaos, seed=seed + i)):
            kind = doc.id.split(":")[2] if doc.id.count(":") >= 2 else "doc"
            out.append((f"chaos:{i}:{kind}:{doc.meta.get('service', doc.meta.get('path', ''))}", doc.text))
    for path in sorted((_REPO / "director" / "knowledge").glob("*.md")):
        out += [(f"runbook:{path.stem}", chunk) for chunk in _paragraph_chunks(path.read_text(encoding="utf-8"), 600)]
    loghub = _REPO / "tests" / "fixtures" / "loghub"
    if loghub.is_dir():
        import pandas as pd

        for path in sorted(loghub.glob("*.csv")):
            lines = pd.read_csv(path)["Content"].astype(str).tolist()
            out += [(f"loghub:{path.stem}:{i // 100}", "\n".join(lines[i:i + 20])) for i in range(0, len(lines), 20)]
    return out


def relevance_samples(devops: Sequence[tuple[str, str]] | None = None,
                      offdomain: Sequence[tuple[str, str]] | None = None) -> list[LabelledSample]:
    devops = devops if devops is not None else devops_texts()
    offdomain = offdomain if offdomain is not None else offdomain_texts()
    return ([LabelledSample(text, 1, group) for group, text in devops]
            + [LabelledSample(text, 0, group) for group, text in offdomain])


def _char_noise(text: str, rng: np.random.Generator) -> str:
    chars = np.array(list(text))
    mask = rng.random(len(chars)) < 0.35
    chars[mask] = rng.choice(list("#$%&*@^~|\\<>{}[]0123456789qxzjk"), int(mask.sum()))
    return "".join(chars)


def _mojibake(text: str, rng: np.random.Generator) -> str:
    doubled = text.encode("utf-8").decode("latin-1")
    return "".join(ch + ("Ã©" if rng.random() < 0.2 else "") for ch in doubled)


def _word_salad(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(w[::-1] if rng.random() < 0.5 else w for w in words)


def _blob(text: str, rng: np.random.Generator) -> str:
    raw = rng.integers(0, 256, max(64, len(text) * 3 // 4), dtype=np.uint8).tobytes()
    return base64.b64encode(raw).decode() if rng.random() < 0.5 else raw.hex()


def _boilerplate(text: str, rng: np.random.Generator) -> str:
    menu = ["Home", "About", "Contact", "Login", "Sign up", "Cookie policy", "Accept all cookies", "Share",
            "Subscribe", "Next page", "Previous", "Click here", "Read more", "Privacy", "Terms"]
    n = max(20, len(text) // 12)
    return " | ".join(str(rng.choice(menu)) for _ in range(n))


CORRUPTIONS: dict[str, Callable[[str, np.random.Generator], str]] = {
    "char_noise": _char_noise, "mojibake": _mojibake, "word_salad": _word_salad, "blob": _blob,
    "boilerplate": _boilerplate}


def quality_samples(texts: Sequence[tuple[str, str]], *, seed: int = 0) -> list[LabelledSample]:
    """Each (group, text) as a positive, plus one corrupted copy of it (a corruption drawn per text)."""
    rng = np.random.default_rng(seed)
    names = list(CORRUPTIONS)
    samples = []
    for group, text in texts:
        samples.append(LabelledSample(text, 1, group))
        name = names[int(rng.integers(len(names)))]
        samples.append(LabelledSample(CORRUPTIONS[name](text, rng), 0, group))
    return samples
