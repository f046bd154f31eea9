"""The interaction-relationship map R and the synonym table, both user-editable data files.

INTRA §3.2 / Fig. 3: R[a, b] = 1 when interactions a and b act on the same object part (hold and carry
both use a handle), else 0. The paper obtained R from GPT-4 with a chain-of-thought prompt; the full
AGD20K matrix is not published, so the shipped ``agd20k_relationship.csv`` holds the paper's stated pairs
(``source=paper``) plus our own judgement under the same rule (``source=project``). Unlisted pairs are 0,
the diagonal is 1.

Supp. B.2: each label has 3 synonyms (Tab. S2); during training the label text is replaced by a random
synonym with probability 0.2. Shipped as ``agd20k_synonyms.json``.
"""

from __future__ import annotations

import csv
import io
import json
import random
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from fourfold.data.agd20k import SEEN_AFFORDANCES, label_text, normalise_label
from fourfold.nn import atomic_write_text

__all__ = [
    "DEFAULT_RELATIONSHIP",
    "DEFAULT_SYNONYMS",
    "RelationError",
    "RelationshipMap",
    "SynonymTable",
    "parse_relation_answers",
    "relation_prompts",
]

DEFAULT_RELATIONSHIP = "agd20k_relationship.csv"
DEFAULT_SYNONYMS = "agd20k_synonyms.json"
_FIELDS = ("a", "b", "related", "source", "note")


class RelationError(ValueError):
    """A relationship or synonym file is malformed; the message names the file and the offending entry."""


def _package_file(name: str) -> Path:
    return Path(str(resources.files("fourfold.intra") / "data" / name))


@dataclass(frozen=True)
class Relation:
    a: str
    b: str
    related: bool
    source: str = ""
    note: str = ""


class RelationshipMap:
    """Symmetric binary relation over interaction labels.

    ``labels`` fixes the label order of :meth:`matrix`; ``relations`` are the listed unordered pairs.
    """

    def __init__(
        self, labels: Sequence[str], relations: Iterable[Relation] = (), *, source: str = "<memory>"
    ):
        self.labels = tuple(normalise_label(x) for x in labels)
        if len(set(self.labels)) != len(self.labels):
            raise RelationError(f"{source}: duplicate labels in {list(self.labels)}")
        known = set(self.labels)
        self.source = source
        self.relations: dict[frozenset[str], Relation] = {}
        for rel in relations:
            a, b = normalise_label(rel.a), normalise_label(rel.b)
            for x in (a, b):
                if x not in known:
                    raise RelationError(
                        f"{source}: unknown affordance {x!r} in pair ({a}, {b}); known: {sorted(known)}"
                    )
            rel = Relation(a, b, bool(rel.related), rel.source, rel.note)
            if a == b:
                if not rel.related:
                    raise RelationError(
                        f"{source}: ({a}, {a}) marked 0, but every label is related to itself"
                    )
                continue
            key = frozenset((a, b))
            old = self.relations.get(key)
            if old is not None and old.related != rel.related:
                raise RelationError(
                    f"{source}: contradiction for ({a}, {b}): listed as {int(old.related)} ({old.a}, {old.b}) "
                    f"and {int(rel.related)} ({rel.a}, {rel.b})"
                )
            self.relations[key] = rel

    # construction

    @classmethod
    def identity(cls, labels: Sequence[str]) -> RelationshipMap:
        """R = I: only same-label views are positives (plain SupCon, the paper's Tab. 4 baseline)."""
        return cls(labels, (), source="identity")

    @classmethod
    def load(cls, path: str | Path, labels: Sequence[str] | None = None) -> RelationshipMap:
        """Read a CSV (``a,b,related,source,note``) or JSON (list of rows, or ``{"labels", "pairs"}``).

        ``labels``: the label set and order (e.g. a dataset's classes); a file entry outside it is an error.
        Without it the labels are the sorted set of names in the file.
        """
        path = Path(path)
        if not path.is_file():
            raise RelationError(f"relationship file not found: {path}")
        text = path.read_text()
        file_labels: list[str] = []
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise RelationError(f"{path}: invalid JSON: {err}") from err
            if isinstance(data, dict):
                file_labels = list(data.get("labels", []))
                data = data.get("pairs")
            if not isinstance(data, list):
                raise RelationError(
                    f"{path}: expected a list of {{a, b, related}} rows or {{'labels', 'pairs'}}"
                )
            rows = data
        else:
            reader = csv.DictReader(io.StringIO(text))
            missing = {"a", "b", "related"} - set(reader.fieldnames or ())
            if missing:
                raise RelationError(
                    f"{path}: CSV header lacks column(s) {sorted(missing)}; expected {_FIELDS}"
                )
            rows = list(reader)
        relations = []
        for i, row in enumerate(rows, start=2 if path.suffix.lower() != ".json" else 0):
            if not isinstance(row, dict) or not row.get("a") or not row.get("b"):
                raise RelationError(f"{path}: entry {i} needs non-empty 'a' and 'b': {row!r}")
            related = str(row.get("related", "")).strip()
            if related not in ("0", "1", "True", "False", "true", "false"):
                raise RelationError(
                    f"{path}: entry {i} ({row['a']}, {row['b']}): related must be 0 or 1, got {related!r}"
                )
            relations.append(
                Relation(
                    str(row["a"]),
                    str(row["b"]),
                    related in ("1", "True", "true"),
                    str(row.get("source") or ""),
                    str(row.get("note") or ""),
                )
            )
        if labels is None:
            names = {normalise_label(x) for x in file_labels}
            for r in relations:
                names |= {normalise_label(r.a), normalise_label(r.b)}
            labels = sorted(names)
        return cls(labels, relations, source=str(path))

    @classmethod
    def default(cls, labels: Sequence[str] | None = None) -> RelationshipMap:
        """The shipped AGD20K map over the 36 Seen labels; ``labels`` restricts it to a subset/order."""
        full = cls.load(_package_file(DEFAULT_RELATIONSHIP), SEEN_AFFORDANCES)
        return full if labels is None else full.restrict(labels)

    def restrict(self, labels: Sequence[str]) -> RelationshipMap:
        """This map on a label subset/order (e.g. AGD20K Unseen's 25 labels); unknown labels are an error."""
        labels = [normalise_label(x) for x in labels]
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise RelationError(f"{self.source}: unknown affordance(s) {unknown}")
        keep = set(labels)
        return RelationshipMap(
            labels, (r for k, r in self.relations.items() if k <= keep), source=self.source
        )

    # queries

    def related(self, a: str, b: str) -> bool:
        a, b = normalise_label(a), normalise_label(b)
        for x in (a, b):
            if x not in self.labels:
                raise RelationError(f"unknown affordance {x!r}; known: {list(self.labels)}")
        if a == b:
            return True
        rel = self.relations.get(frozenset((a, b)))
        return bool(rel and rel.related)

    def matrix(self) -> torch.Tensor:
        """(L, L) bool tensor in ``self.labels`` order: symmetric, diagonal True."""
        index = {x: i for i, x in enumerate(self.labels)}
        m = torch.eye(len(self.labels), dtype=torch.bool)
        for rel in self.relations.values():
            if rel.related:
                i, j = index[rel.a], index[rel.b]
                m[i, j] = m[j, i] = True
        return m

    # writing

    def to_csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_FIELDS)
        for rel in sorted(self.relations.values(), key=lambda r: (r.a, r.b)):
            writer.writerow([rel.a, rel.b, int(rel.related), rel.source, rel.note])
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        """Write CSV (or JSON ``{"labels", "pairs"}`` for a ``.json`` path) atomically."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            pairs = [
                {"a": r.a, "b": r.b, "related": int(r.related), "source": r.source, "note": r.note}
                for r in sorted(self.relations.values(), key=lambda r: (r.a, r.b))
            ]
            atomic_write_text(
                path, json.dumps({"labels": list(self.labels), "pairs": pairs}, indent=1) + "\n"
            )
        else:
            atomic_write_text(path, self.to_csv_text())

    def __repr__(self) -> str:
        pos = sum(r.related for r in self.relations.values())
        return f"RelationshipMap({len(self.labels)} labels, {pos} related pairs, source={self.source!r})"


class SynonymTable:
    """``{label: [synonym texts]}``; :meth:`text` draws the conditioning text of a training view."""

    def __init__(self, table: dict[str, Sequence[str]], *, source: str = "<memory>"):
        self.source = source
        self.table: dict[str, tuple[str, ...]] = {}
        for label, syns in table.items():
            if isinstance(syns, str) or not all(isinstance(s, str) for s in syns):
                raise RelationError(
                    f"{source}: synonyms of {label!r} must be a list of strings, got {syns!r}"
                )
            self.table[normalise_label(label)] = tuple(
                " ".join(s.strip().lower().split()) for s in syns if s.strip()
            )
        self._drop_label_synonyms()

    def _drop_label_synonyms(self) -> None:
        # A synonym equal to a label would make that label's text a positive of another label (supp. Tab. S2
        # lists e.g. "strike" under beat, hit and kick, which is fine, but "pick up"-like collisions are not).
        label_texts = {label_text(x) for x in self.table}
        for label, syns in self.table.items():
            clash = [s for s in syns if s in label_texts]
            if clash:
                warnings.warn(
                    f"{self.source}: dropping synonym(s) {clash} of {label!r}: they equal a label",
                    UserWarning,
                    stacklevel=3,
                )
                self.table[label] = tuple(s for s in syns if s not in label_texts)

    @classmethod
    def load(cls, path: str | Path, labels: Sequence[str] | None = None) -> SynonymTable:
        """Read JSON ``{label: [synonyms]}``; with ``labels``, a label outside them is an error."""
        path = Path(path)
        if not path.is_file():
            raise RelationError(f"synonym file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RelationError(f"{path}: invalid JSON: {err}") from err
        if not isinstance(data, dict):
            raise RelationError(f"{path}: expected a JSON object {{label: [synonyms]}}")
        table = cls(data, source=str(path))
        if labels is not None:
            table = table.restrict(labels, strict=True)
        return table

    @classmethod
    def default(cls, labels: Sequence[str] | None = None) -> SynonymTable:
        full = cls.load(_package_file(DEFAULT_SYNONYMS), SEEN_AFFORDANCES)
        return full if labels is None else full.restrict(labels, strict=False)

    def restrict(self, labels: Sequence[str], *, strict: bool) -> SynonymTable:
        """Entries of ``labels`` only; ``strict`` makes an entry for a label outside them an error."""
        keep = {normalise_label(x) for x in labels}
        unknown = sorted(set(self.table) - keep)
        if strict and unknown:
            raise RelationError(f"{self.source}: unknown affordance(s) {unknown}; known: {sorted(keep)}")
        out = SynonymTable({}, source=self.source)
        out.table = {k: v for k, v in self.table.items() if k in keep}
        return out

    def synonyms(self, label: str) -> tuple[str, ...]:
        return self.table.get(normalise_label(label), ())

    def text(self, label: str, rng: random.Random, p: float = 0.2) -> str:
        """The label's text, or with probability ``p`` one of its synonyms (supp. B.2)."""
        syns = self.synonyms(label)
        if syns and rng.random() < p:
            return rng.choice(syns)
        return label_text(label)

    def all_texts(self, labels: Sequence[str]) -> list[str]:
        """Every string a run can condition on (labels + synonyms), for the text-embedding cache."""
        out = [label_text(x) for x in labels]
        for x in labels:
            out += [s for s in self.synonyms(x) if s not in out]
        return out

    def save(self, path: str | Path) -> None:
        atomic_write_text(
            Path(path), json.dumps({k: list(v) for k, v in self.table.items()}, indent=1) + "\n"
        )


# LLM round trip (INTRA §3.2, Fig. 3): prompts out, the user's LLM answers in; no network call here.

_PROMPT = (
    "Two interactions with objects: '{a}' and '{b}'.\n"
    "Step 1: list five objects that allow both interactions.\n"
    "Step 2: for each object, name the part used for '{a}' and the part used for '{b}'.\n"
    "Step 3: if the interactions use the same part on most of these objects, they are related.\n"
    "End with one line 'Answer: yes' or 'Answer: no'."
)


def relation_prompts(labels: Sequence[str]) -> list[dict[str, str]]:
    """One chain-of-thought prompt per unordered label pair (L·(L−1)/2 rows ``{a, b, prompt}``)."""
    labels = [normalise_label(x) for x in labels]
    return [
        {"a": a, "b": b, "prompt": _PROMPT.format(a=label_text(a), b=label_text(b))}
        for i, a in enumerate(labels)
        for b in labels[i + 1 :]
    ]


def parse_relation_answers(
    rows: Iterable[dict], labels: Sequence[str], source: str = "llm"
) -> RelationshipMap:
    """``{a, b, answer}`` rows (the LLM's full reply) -> map; the last 'Answer: yes/no' line decides."""
    relations = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not {"a", "b", "answer"} <= set(row):
            raise RelationError(f"answer row {n} needs 'a', 'b' and 'answer': {row!r}")
        verdicts = [
            line.split(":", 1)[1].strip().lower()
            for line in str(row["answer"]).splitlines()
            if line.strip().lower().startswith("answer:")
        ]
        if not verdicts or verdicts[-1].rstrip(".") not in ("yes", "no"):
            raise RelationError(
                f"answer row {n} ({row['a']}, {row['b']}): no final 'Answer: yes' or 'Answer: no' line"
            )
        relations.append(Relation(row["a"], row["b"], verdicts[-1].startswith("yes"), source, ""))
    return RelationshipMap(labels, relations, source=source)
