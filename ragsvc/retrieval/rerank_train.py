"""Supervised fine-tuning of a cross-encoder reranker on a collection's relevance judgements.

Training pairs come from judgements (qrels) of queries that are not the ones a model is evaluated on, and
from the service's own first stage:

- positives: every document judged relevant to a query (label 1);
- hard negatives: documents the first stage ranks among the query's top `candidates` that are not judged
  relevant (label 0), drawn at random with a fixed seed. These are the documents the reranker will have to
  push down at query time, since it rescores exactly that shortlist; random documents would teach it only
  what the first stage already knows.

The model starts from a local folder (by default the packaged MiniLM bi-encoder, whose transformer becomes a
sequence classifier with a fresh one-logit head) and is trained with binary cross-entropy on that logit, AdamW,
a linear warm-up then linear decay. The result is saved with `CrossEncoder.save`, so `CrossEncoderReranker`
(and `rerank = { name = "cross-encoder", model = ... }` in eval suites) loads it as it loads any
cross-encoder. The loop is plain torch over the CrossEncoder's model and tokenizer: sentence-transformers'
own CrossEncoderTrainer needs the `datasets` package, which ragsvc does not otherwise depend on.

A model trained this way is supervised on the collection's domain: report it apart from zero-shot figures.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ragsvc.errors import InvalidInput

OnStep = Callable[[int, int, float], None]
"""on_step(step, total_steps, loss) after every optimiser step (a progress bar)."""


@dataclass(frozen=True, slots=True)
class TrainingPair:
    query: str
    passage: str
    label: float
    """1.0 judged relevant, 0.0 a hard negative."""


@dataclass(frozen=True, slots=True)
class TrainOptions:
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 3e-5
    warmup_fraction: float = 0.1
    """Share of the steps over which the learning rate rises linearly from 0."""
    max_length: int = 256
    """Tokens of query + passage together; a longer pair loses tokens from the end of whichever of the two is
    longer (the passage, nearly always)."""
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"epochs": 1 <= self.epochs <= 20, "batch_size": 1 <= self.batch_size <= 512,
                  "learning_rate": 0 < self.learning_rate <= 1e-2, "warmup_fraction": 0 <= self.warmup_fraction < 1,
                  "max_length": 16 <= self.max_length <= 512}
        for name, ok in checks.items():
            if not ok:
                raise InvalidInput(f"{name}={getattr(self, name)} is out of range; epochs 1-20, batch_size 1-512, "
                                   "learning_rate in (0, 0.01], warmup_fraction in [0, 1), max_length 16-512")


@dataclass(frozen=True, slots=True)
class TrainReport:
    queries: int
    pairs: int
    positives: int
    steps: int
    seconds: float
    first_loss: float
    """Mean loss of the first tenth of the steps..."""
    last_loss: float
    """...and of the last tenth: a loss that did not fall says the run learned nothing."""


def mine_pairs(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
               ranked: Callable[[str], Sequence[str]], text: Callable[[str], str | None], *,
               negatives: int = 4, candidates: int = 20, seed: int = 0) -> list[TrainingPair]:
    """Positives from `qrels` (score > 0) and `negatives` hard negatives per query from the first
    `candidates` of `ranked(query text)` (document ids, best first) not judged relevant. `text(id)` is a
    document's text, None when the collection does not hold it (such documents are skipped)."""
    if negatives < 0 or candidates < 1:
        raise InvalidInput(f"negatives must be >= 0 and candidates >= 1, got {negatives} and {candidates}")
    rng = random.Random(seed)
    pairs: list[TrainingPair] = []
    for query_id in sorted(qrels):
        query = queries.get(query_id)
        relevant = {doc for doc, score in qrels[query_id].items() if score > 0}
        positives = [(doc, body) for doc in sorted(relevant) if (body := text(doc)) is not None]
        if query is None or not positives:
            continue  # a judgement without its query or documents teaches nothing
        pairs.extend(TrainingPair(query, body, 1.0) for _, body in positives)
        pool = [doc for doc in dict.fromkeys(ranked(query)) if doc not in relevant][:candidates]
        for doc in rng.sample(pool, min(negatives, len(pool))):
            body = text(doc)
            if body is not None:
                pairs.append(TrainingPair(query, body, 0.0))
    return pairs


def train_cross_encoder(pairs: Sequence[TrainingPair], base: str | Path, out: Path, *,
                        options: TrainOptions = TrainOptions(), on_step: OnStep | None = None) -> TrainReport:
    """Fine-tune a cross-encoder from the model folder `base` on `pairs`; save it to `out` (a new folder)."""
    if not any(p.label > 0 for p in pairs) or not any(p.label == 0 for p in pairs):
        raise InvalidInput("training needs both relevant pairs and negatives; check that the qrels' documents are "
                           "in the collection and that --negatives is above 0")
    import torch  # heavy imports, kept out of module load
    from sentence_transformers import CrossEncoder
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(options.seed)
    model = CrossEncoder(str(base), num_labels=1, max_length=options.max_length, device="cpu",
                         local_files_only=True)
    network, tokenizer = model.model, model.tokenizer
    order = list(pairs)
    batches_per_epoch = math.ceil(len(order) / options.batch_size)
    total = batches_per_epoch * options.epochs
    optimizer = torch.optim.AdamW(network.parameters(), lr=options.learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, int(total * options.warmup_fraction), total)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses: list[float] = []
    started = time.perf_counter()
    network.train()
    for epoch in range(options.epochs):
        random.Random(options.seed + epoch).shuffle(order)
        for start in range(0, len(order), options.batch_size):
            batch = order[start:start + options.batch_size]
            features = tokenizer([p.query for p in batch], [p.passage for p in batch], padding=True,
                                 truncation="longest_first", max_length=options.max_length, return_tensors="pt")
            logits = network(**features).logits.view(-1)
            loss = loss_fn(logits, torch.tensor([p.label for p in batch], dtype=logits.dtype))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(len(losses), total, losses[-1])
    network.eval()
    model.save(str(out))
    tenth = max(1, len(losses) // 10)
    return TrainReport(queries=len({p.query for p in pairs}), pairs=len(pairs),
                       positives=sum(1 for p in pairs if p.label > 0), steps=len(losses),
                       seconds=time.perf_counter() - started, first_loss=sum(losses[:tenth]) / tenth,
                       last_loss=sum(losses[-tenth:]) / tenth)
