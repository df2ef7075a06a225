"""Supervised fine-tuning of a cross-encoder reranker on a collection's relevance judgements.

Training data comes from judgements (qrels) of queries that are not the ones a model is evaluated on, and
from the service's own first stage, as groups: one judged-relevant document of a query and `negatives` hard
negatives, documents the first stage ranks among the query's top `candidates` that are not judged relevant
(drawn at random with a fixed seed). These are the documents the reranker must push down at query time,
since it rescores exactly that shortlist.

The loss is listwise: a softmax over each group's scores, cross-entropy on the relevant one (the "localized
contrastive estimation" of Gao, Dai and Callan, 2021, for rerankers trained on a retriever's own shortlist).
A pointwise loss (binary cross-entropy per pair) is the usual alternative, and a poor one here: with most
pairs negative and a fresh head, a short run learns the class prior and little else, and its scores need not
order a shortlist at all. A listwise loss has no prior to learn: the only way to lower it is to score the
relevant document above the others of its own query, which is what a reranker is for.

The model starts from a local folder (by default the packaged MiniLM bi-encoder, whose transformer becomes a
sequence classifier with a fresh one-logit head). The head starts from random weights, so it gets its own,
much higher learning rate than the pretrained encoder; both warm up linearly, then decay linearly. Training
stops after `epochs` or `max_steps`, whichever comes first, so a run has a known cost on a small CPU. The loop
is plain torch over the CrossEncoder's model and tokenizer: sentence-transformers' own CrossEncoderTrainer
needs the `datasets` package, which ragsvc does not otherwise depend on. `save_cross_encoder` writes the
result with `CrossEncoder.save` plus a `ragsvc-training.json` of how it was trained and checked, so
`CrossEncoderReranker` loads it as it loads any cross-encoder. Inference applies a sigmoid to the logit;
training never does, and as a monotone map it changes no ranking.

A model trained this way is supervised on the collection's domain: report it apart from zero-shot figures.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragsvc.errors import InvalidInput
from ragsvc.retrieval.rerank import TRAINING_FILE

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

OnStep = Callable[[int, int, float], None]
"""on_step(step, total_steps, loss) after every optimiser step (a progress bar)."""


@dataclass(frozen=True, slots=True)
class TrainingGroup:
    query: str
    positive: str
    """A document judged relevant to the query."""
    negatives: tuple[str, ...]
    """Documents the first stage ranks high for the query that are not judged relevant."""


@dataclass(frozen=True, slots=True)
class TrainOptions:
    epochs: int = 1
    max_steps: int | None = 150
    """Step budget: training stops here even if epochs remain (None: run every epoch). A step scores
    `batch_size` groups, so the cost of a run is about max_steps x batch_size x (1 + negatives) passages."""
    batch_size: int = 4
    """Groups per optimiser step (each one relevant document and its negatives)."""
    learning_rate: float = 1e-4
    """For the pretrained encoder: high for BERT fine-tuning, as a short run must move a bi-encoder's weights
    to a different task (scoring a joint query-passage input) within a few hundred steps."""
    head_learning_rate: float = 1e-3
    """For the freshly initialised classifier head, which starts from noise and has far less to lose."""
    warmup_fraction: float = 0.1
    """Share of the steps over which the learning rates rise linearly from 0."""
    max_length: int = 128
    """Tokens of query + passage together; a longer pair loses tokens from the end of whichever of the two is
    longer (the passage, nearly always). Cost grows with it; a title and the first sentences of an abstract
    carry most of what a relevance judgement rests on."""
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"epochs": 1 <= self.epochs <= 20,
                  "max_steps": self.max_steps is None or 1 <= self.max_steps <= 100_000,
                  "batch_size": 1 <= self.batch_size <= 256, "learning_rate": 0 < self.learning_rate <= 1e-2,
                  "head_learning_rate": 0 < self.head_learning_rate <= 1e-1,
                  "warmup_fraction": 0 <= self.warmup_fraction < 1, "max_length": 16 <= self.max_length <= 512}
        for name, ok in checks.items():
            if not ok:
                raise InvalidInput(f"{name}={getattr(self, name)} is out of range; epochs 1-20, max_steps 1-100000, "
                                   "batch_size 1-256, learning_rate in (0, 0.01], head_learning_rate in (0, 0.1], "
                                   "warmup_fraction in [0, 1), max_length 16-512")


@dataclass(frozen=True, slots=True)
class TrainReport:
    queries: int
    groups: int
    passages: int
    """Query-passage pairs scored per epoch (each group's positive and negatives)."""
    steps: int
    seconds: float
    chance_loss: float
    """The loss of a model that scores every passage alike: log(group size), averaged over groups."""
    first_loss: float
    """Mean loss of the first tenth of the steps..."""
    last_loss: float
    """...and of the last tenth: a loss that stays near chance_loss says the run learned nothing."""

    def as_dict(self) -> dict[str, object]:
        return {"queries": self.queries, "groups": self.groups, "passages": self.passages, "steps": self.steps,
                "seconds": round(self.seconds, 1), "chance_loss": round(self.chance_loss, 4),
                "first_loss": round(self.first_loss, 4), "last_loss": round(self.last_loss, 4)}


def mine_groups(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                ranked: Callable[[str], Sequence[str]], text: Callable[[str], str | None], *,
                negatives: int = 4, candidates: int = 20, seed: int = 0) -> list[TrainingGroup]:
    """One group per judged-relevant document (score > 0) of each query in `qrels`, with `negatives` hard
    negatives drawn for it from the first `candidates` of `ranked(query text)` (document ids, best first) not
    judged relevant. `text(id)` is a document's text, None when the collection does not hold it (such
    documents are skipped). A query whose shortlist holds no negative gives no group: it has nothing to rank."""
    if negatives < 1 or candidates < 1:
        raise InvalidInput(f"negatives and candidates must be at least 1, got {negatives} and {candidates}")
    rng = random.Random(seed)
    groups: list[TrainingGroup] = []
    for query_id in sorted(qrels):
        query = queries.get(query_id)
        relevant = {doc for doc, score in qrels[query_id].items() if score > 0}
        positives = [body for doc in sorted(relevant) if (body := text(doc)) is not None]
        if query is None or not positives:
            continue  # a judgement without its query or documents teaches nothing
        shortlist = [doc for doc in dict.fromkeys(ranked(query)) if doc not in relevant][:candidates]
        pool = [body for doc in shortlist if (body := text(doc)) is not None]
        for positive in positives if pool else []:
            groups.append(TrainingGroup(query, positive, tuple(rng.sample(pool, min(negatives, len(pool))))))
    return groups


def load_base(base: str | Path, *, max_length: int) -> CrossEncoder:
    """The CrossEncoder to train: `base` (a local folder) with a one-logit head, fresh if the folder has none."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(base), num_labels=1, max_length=max_length, device="cpu", local_files_only=True)


def group_loss(logits: Any, sizes: Sequence[int]) -> Any:
    """Listwise loss of a step: `logits` (passages,) holds each group's positive then its negatives, group after
    group; `sizes` the length of each group. Cross-entropy of a softmax over each group, target its first."""
    import torch

    scores = torch.full((len(sizes), max(sizes)), -torch.inf, dtype=logits.dtype)  # (groups, widest group)
    rows = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))  # (passages,)
    starts = torch.cumsum(torch.tensor([0, *sizes[:-1]]), 0)
    cols = torch.arange(len(rows)) - starts[rows]  # (passages,) position within its group
    scores = scores.index_put((rows, cols), logits)
    return torch.nn.functional.cross_entropy(scores, torch.zeros(len(sizes), dtype=torch.long))


def train_cross_encoder(groups: Sequence[TrainingGroup], base: str | Path, *,
                        options: TrainOptions = TrainOptions(), on_step: OnStep | None = None,
                        ) -> tuple[CrossEncoder, TrainReport]:
    """Fine-tune a cross-encoder from the model folder `base` on `groups`; the trained model (in memory, in
    eval mode) and what the run did. Saving is separate (`save_cross_encoder`), after the held-out check."""
    if not groups:
        raise InvalidInput("no training groups: check that the qrels' documents are in the collection and that "
                           "its search returns other documents for the judged queries")
    import torch  # heavy imports, kept out of module load
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(options.seed)
    model = load_base(base, max_length=options.max_length)
    network, tokenizer = model.model, model.tokenizer
    if network is None:
        raise InvalidInput(f"{base} does not load as a transformers model to fine-tune; start from a text model "
                           "folder (a BERT-style encoder or a cross-encoder)")
    head = [p for name, p in network.named_parameters() if name.startswith("classifier.")]
    encoder = [p for name, p in network.named_parameters() if not name.startswith("classifier.")]
    order = list(groups)
    per_epoch = math.ceil(len(order) / options.batch_size)
    total = min(per_epoch * options.epochs, options.max_steps or per_epoch * options.epochs)
    optimizer = torch.optim.AdamW([{"params": encoder, "lr": options.learning_rate},
                                   {"params": head, "lr": options.head_learning_rate}])
    schedule = get_linear_schedule_with_warmup(optimizer, int(total * options.warmup_fraction), total)
    losses: list[float] = []
    started = time.perf_counter()
    network.train()
    for epoch in range(options.epochs):
        random.Random(options.seed + epoch).shuffle(order)
        for start in range(0, len(order), options.batch_size):
            if len(losses) == total:
                break
            batch = order[start:start + options.batch_size]
            pairs = [(g.query, passage) for g in batch for passage in (g.positive, *g.negatives)]
            features = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True,
                                 truncation="longest_first", max_length=options.max_length, return_tensors="pt")
            loss = group_loss(network(**features).logits.view(-1), [1 + len(g.negatives) for g in batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(len(losses), total, losses[-1])
    network.eval()
    tenth = max(1, len(losses) // 10)
    return model, TrainReport(
        queries=len({g.query for g in groups}), groups=len(groups),
        passages=sum(1 + len(g.negatives) for g in groups), steps=len(losses), seconds=time.perf_counter() - started,
        chance_loss=sum(math.log(1 + len(g.negatives)) for g in groups) / len(groups),
        first_loss=sum(losses[:tenth]) / tenth, last_loss=sum(losses[-tenth:]) / tenth)


def save_cross_encoder(model: CrossEncoder, out: Path, record: Mapping[str, object]) -> None:
    """Save `model` to the folder `out` (CrossEncoder's own layout) with `record` as TRAINING_FILE beside it."""
    model.save(str(out))
    (out / TRAINING_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
