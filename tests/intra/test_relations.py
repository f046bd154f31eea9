"""Relationship map and synonym table: the shipped defaults, validation errors, round trips."""

import json
import random

import pytest
import torch

from fourfold.data.agd20k import SEEN_AFFORDANCES, UNSEEN_AFFORDANCES
from fourfold.intra import RelationError, RelationshipMap, SynonymTable


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_default_map_has_paper_pairs_symmetric_diagonal():
    r = RelationshipMap.default(SEEN_AFFORDANCES)
    m = r.matrix()
    assert m.shape == (36, 36) and m.dtype == torch.bool
    assert torch.equal(m, m.T) and bool(m.diagonal().all())
    idx = {x: i for i, x in enumerate(SEEN_AFFORDANCES)}
    for a, b in [("hold", "carry"), ("drink_with", "sip"), ("sit_on", "lie_on"), ("eat", "drink_with")]:
        assert m[idx[a], idx[b]] and m[idx[b], idx[a]]
    for a, b in [("cut_with", "hold"), ("sip", "hold"), ("cut", "cut_with"), ("ride", "sit_on")]:
        assert not m[idx[a], idx[b]]
    assert r.related("Cut With", "wash")


def test_default_unseen_restriction_keeps_order():
    r = RelationshipMap.default(UNSEEN_AFFORDANCES)
    assert r.labels == UNSEEN_AFFORDANCES and r.matrix().shape == (25, 25)


def test_unknown_label_error(tmp_path):
    p = write(tmp_path, "r.csv", "a,b,related\nhold,levitate,1\n")
    with pytest.raises(RelationError, match="levitate"):
        RelationshipMap.load(p, ["hold", "carry"])


def test_contradiction_error_names_pair(tmp_path):
    p = write(tmp_path, "r.csv", "a,b,related,source,note\nhold,carry,1,,\ncarry,hold,0,,\n")
    with pytest.raises(RelationError, match=r"contradiction.*carry"):
        RelationshipMap.load(p)


def test_diagonal_zero_and_bad_value_errors(tmp_path):
    with pytest.raises(RelationError, match="related to itself"):
        RelationshipMap.load(write(tmp_path, "d.csv", "a,b,related\nhold,hold,0\n"))
    with pytest.raises(RelationError, match="0 or 1"):
        RelationshipMap.load(write(tmp_path, "v.csv", "a,b,related\nhold,carry,yes\n"))
    with pytest.raises(RelationError, match="lacks"):
        RelationshipMap.load(write(tmp_path, "h.csv", "x,y\nhold,carry\n"))
    with pytest.raises(RelationError, match="not found"):
        RelationshipMap.load(tmp_path / "missing.csv")


def test_csv_json_round_trip_and_spaces(tmp_path):
    p = write(
        tmp_path,
        "r.csv",
        "a,b,related,source,note\ncut with,wash,1,me,blade\nhold,carry,1,,\nhold,cut_with,0,,\n",
    )
    r = RelationshipMap.load(p)
    assert r.labels == ("carry", "cut_with", "hold", "wash")
    for suffix in ("csv", "json"):
        out = tmp_path / f"out.{suffix}"
        r.save(out)
        back = RelationshipMap.load(out)
        assert back.labels == r.labels and torch.equal(back.matrix(), r.matrix())
    assert json.loads((tmp_path / "out.json").read_text())["labels"] == list(r.labels)


def test_identity_map():
    assert torch.equal(RelationshipMap.identity(["a", "b", "c"]).matrix(), torch.eye(3, dtype=torch.bool))


def test_default_synonyms_paper_table():
    s = SynonymTable.default(SEEN_AFFORDANCES)
    assert s.synonyms("hold") == ("grasp", "embrace", "grip")
    assert s.synonyms("cut with") == ("slice with", "carve with")
    assert len(s.table) == 36


def test_synonym_equal_to_label_dropped_with_warning(tmp_path):
    p = write(tmp_path, "s.json", json.dumps({"hold": ["grip", "carry"], "carry": ["haul"]}))
    with pytest.warns(UserWarning, match="carry"):
        s = SynonymTable.load(p, ["hold", "carry"])
    assert s.synonyms("hold") == ("grip",)


def test_synonym_errors(tmp_path):
    with pytest.raises(RelationError, match="unknown"):
        SynonymTable.load(write(tmp_path, "a.json", json.dumps({"fly": ["soar"]})), ["hold"])
    with pytest.raises(RelationError, match="list of strings"):
        SynonymTable.load(write(tmp_path, "b.json", json.dumps({"hold": "grip"})))
    with pytest.raises(RelationError, match="invalid JSON"):
        SynonymTable.load(write(tmp_path, "c.json", "{"))


def test_synonym_rate_is_point_two_and_label_unchanged():
    s = SynonymTable({"hold": ["grasp", "grip"]})
    rng = random.Random(0)
    draws = [s.text("hold", rng) for _ in range(10_000)]
    rate = sum(d != "hold" for d in draws) / len(draws)
    assert abs(rate - 0.2) < 0.015
    assert set(draws) == {"hold", "grasp", "grip"}
    assert s.text("cut_with", rng, p=1.0) == "cut with"  # no synonyms: the label text itself


def test_relmap_prompt_parse_round_trip(tmp_path):
    from typer.testing import CliRunner

    from fourfold.intra.cli import app

    (tmp_path / "labels.txt").write_text("hold\ncarry\ncut_with\n")
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["relmap", "prompt", "--labels", str(tmp_path / "labels.txt"), "--out", str(tmp_path / "p.jsonl")],
    )
    assert r.exit_code == 0, r.output
    prompts = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(prompts) == 3 and "five objects" in prompts[0]["prompt"]
    same = {("hold", "carry"), ("carry", "hold")}
    answers = [
        {**p, "answer": "Knife: handle vs blade...\nAnswer: " + ("yes" if (p["a"], p["b"]) in same else "no")}
        for p in prompts
    ]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    r = runner.invoke(
        app,
        ["relmap", "parse", "--answers", str(tmp_path / "a.jsonl"), "--labels", str(tmp_path / "labels.txt"),
         "--out", str(tmp_path / "r.csv")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    m = RelationshipMap.load(tmp_path / "r.csv", ["hold", "carry", "cut_with"])
    assert m.related("hold", "carry") and not m.related("hold", "cut_with")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"a": "hold", "b": "carry", "answer": "maybe"}) + "\n")
    r = runner.invoke(app, ["relmap", "parse", "--answers", str(tmp_path / "bad.jsonl"), "--labels",
                            str(tmp_path / "labels.txt"), "--out", str(tmp_path / "x.csv")])  # fmt: skip
    assert isinstance(r.exception, RelationError) and not (tmp_path / "x.csv").exists()
