"""The fixed text sample int8 quantisation is calibrated on: varied, written for this purpose, in no benchmark.

Static int8 quantisation fixes a scale for every activation it quantises from the ranges those activations
take on a calibration sample. A sample from one domain (say, the corpus a benchmark then measures) would fit
the scales to it and flatter the result; one that is too short would leave late token positions unseen. So
the sample mixes registers (science, medicine, law, code, chat, news, numbers, lists, other languages) and
lengths, from an empty text (the special tokens alone: without it, the scales miss what such short inputs do
to the activations) and one-word queries to texts past any encoder's truncation length. It is fixed: the
same sample gives the same quantised model, which is cached under a digest of the sample.
"""

from __future__ import annotations

import hashlib

PARAGRAPHS: tuple[str, ...] = (
    "Mitochondria divide and fuse continuously; when fission outpaces fusion in cultured neurons, the network "
    "fragments, ATP production falls, and the cells become more sensitive to oxidative stress.",
    "In a randomised, double-blind trial of 412 adults with moderate asthma, the inhaled combination reduced "
    "severe exacerbations by 31% (rate ratio 0.69; 95% CI 0.55-0.86) compared with the steroid alone.",
    "The tenant shall give the landlord written notice of any defect within fourteen days of discovering it; "
    "failure to do so does not release the landlord from the duty to repair, but may reduce damages.",
    "def chunk(tokens: list[int], size: int, overlap: int) -> list[list[int]]:\n    step = size - overlap\n"
    "    return [tokens[i:i + size] for i in range(0, max(len(tokens) - overlap, 1), step)]",
    "SELECT c.name, count(*) AS n FROM chunks AS k JOIN collections AS c ON c.id = k.collection_id "
    "GROUP BY c.name HAVING count(*) > 100 ORDER BY n DESC LIMIT 20;",
    "hey, did you get the invoice I sent on Tuesday? the client says they never received it, can you check "
    "the outbox and resend it if it's stuck",
    "Heavy rain closed two bridges on the northern bypass overnight, and the regional rail operator said "
    "services between the harbour and the airport would run every thirty minutes until further notice.",
    "Quarterly revenue rose 8.4% to $2.31 billion, while operating margin narrowed from 17.2% to 15.9% as "
    "freight and component costs climbed; the company kept its full-year guidance unchanged.",
    "Ingredients: 250 g flour, 2 eggs, 300 ml milk, a pinch of salt. Whisk the eggs into the flour, add the "
    "milk slowly, rest the batter for half an hour, then fry thin pancakes in a hot buttered pan.",
    "La bibliothèque municipale prolonge ses horaires d'ouverture pendant les examens : les salles de lecture "
    "restent accessibles jusqu'à vingt-deux heures du lundi au vendredi.",
    "Die neue Verordnung verpflichtet Betreiber größerer Rechenzentren, die Abwärme zu erfassen und ab 2027 "
    "mindestens ein Fünftel davon in ein Wärmenetz einzuspeisen.",
    "El ensayo comparó dos pautas de vacunación en niños menores de cinco años y no encontró diferencias en la "
    "respuesta de anticuerpos a los seis meses.",
    "A hash join builds a table on the smaller input and probes it with each row of the larger one; when the "
    "build side does not fit in memory, both inputs are partitioned to disk and joined partition by partition.",
    "Gradient clipping bounds the norm of the update, not the loss: a spike in the loss still shows in the "
    "logs, but a single bad batch can no longer throw the weights far from where training had brought them.",
    "Error: connection refused (127.0.0.1:8080). Is the server running? Start it with `serve --port 8080` or "
    "pass --url to point the client at another address.",
    "1. Preheat the oven. 2. Grease the tin. 3. Mix the dry ingredients. 4. Fold in the wet ones. 5. Bake for "
    "forty minutes or until a skewer comes out clean.",
    "Patients with chronic kidney disease stage 3b or worse were excluded, as were those taking loop "
    "diuretics, lithium, or more than one non-steroidal anti-inflammatory drug at baseline.",
    "The glacier has retreated 1.8 km since the first survey in 1921, and its terminus now sits in a "
    "proglacial lake that did not exist on maps drawn before 1960.",
    "Photosynthesis in C4 plants concentrates carbon dioxide around RuBisCO in bundle-sheath cells, which "
    "suppresses photorespiration and gives them an advantage in hot, dry climates.",
    "",
    "insulin",
    "thanks!",
    "v2.3.1",
    "what is the capital of australia",
    "side effects of metformin",
    "how do I undo the last git commit but keep the changes",
    "Knock-out mice lacking the receptor developed normally but showed impaired spatial memory in the water "
    "maze, and long-term potentiation in hippocampal slices was reduced by about half.",
    "The committee recommends that the board adopt the revised procurement policy, subject to an independent "
    "review of contracts above the threshold after twelve months of operation.",
    "class LruCache:\n    def __init__(self, capacity):\n        self.capacity = capacity\n"
    "        self.items = OrderedDict()\n\n    def get(self, key):\n        self.items.move_to_end(key)\n"
    "        return self.items[key]",
    "Vitamin D supplementation did not lower the incidence of invasive cancer or cardiovascular events over a "
    "median follow-up of 5.3 years in this population of generally healthy older adults.",
    "The striker scored twice in the second half, and the visitors, down to ten men after the red card, held "
    "on for a draw that keeps them two points clear at the top of the table.",
    "Torque is the rotational counterpart of force: the product of the force and its lever arm, measured in "
    "newton metres, and it sets the angular acceleration of a body with a given moment of inertia.",
    "Kinase activity was measured by the incorporation of 32P into the peptide substrate; values are means of "
    "three independent experiments, and error bars show the standard deviation.",
    "Ticket #4821: after the upgrade, exports larger than 2 GB fail with 'file too large' on the shared drive; "
    "smaller exports work. Workaround: split the export by month.",
)
"""Short and medium texts, one register each."""

LONG_REPEATS = 6
"""Each long text joins this many paragraphs in turn: well past 256 tokens, so every position is calibrated."""


def calibration_texts() -> list[str]:
    """The paragraphs, then long texts made of consecutive paragraphs (wrapping round), in a fixed order."""
    count = len(PARAGRAPHS)
    long = [" ".join(PARAGRAPHS[(start + k) % count] for k in range(LONG_REPEATS)) for start in range(0, count, 3)]
    return list(PARAGRAPHS) + long


def calibration_digest() -> str:
    """A short digest of the sample: part of the quantised model's cache key."""
    return hashlib.sha256("\x00".join(calibration_texts()).encode()).hexdigest()[:16]
