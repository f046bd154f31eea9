"""The procedural part world: layout readable by the AGD20K readers, exact relationship map, cue design."""

import csv

import numpy as np
import pytest
from PIL import Image

from fourfold.data.affordance_shapes import (
    AFFORDANCE_PART,
    OBJECTS,
    TRAIN_OBJECTS,
    WorldConfig,
    affordances_of,
    cue_index,
    make_affordance_world,
    world_labels,
)
from fourfold.data.agd20k import load_gt, read_exocentric, read_testset
from fourfold.intra.relations import RelationshipMap


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_affordance_world(
        tmp_path_factory.mktemp("w"), seed=3, config=WorldConfig(exo_per_pair=2, ego_per_object=1)
    )


def test_layout_and_readers(world):
    labels = world_labels()
    items = read_exocentric(world / "Seen/trainset/exocentric", labels)
    pairs = {(i.affordance, i.obj) for i in items}
    assert pairs == {(a, o) for o in TRAIN_OBJECTS for a in affordances_of(o)}
    assert len(items) == 2 * len(pairs)
    assert len(read_exocentric(world / "Unseen/trainset/exocentric", labels)) == len(items)
    seen = read_testset(world, "Seen", labels=labels)
    unseen = read_testset(world, "Unseen", labels=labels)
    assert {i.obj for i in unseen} == {"cleaver", "cup"}
    assert len(seen) == sum(len(affordances_of(o)) for o in TRAIN_OBJECTS)


def test_relationship_is_same_part(world):
    labels = world_labels()
    r = RelationshipMap.load(world / "relationship.csv", labels).matrix()
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            assert bool(r[i, j]) == (AFFORDANCE_PART[a] == AFFORDANCE_PART[b])
    rows = list(csv.DictReader((world / "relationship.csv").read_text().splitlines()))
    assert len(rows) == len(labels) * (len(labels) - 1) // 2


def test_most_part_types_occur_on_two_training_objects():
    parts = {p for a, p in AFFORDANCE_PART.items()}
    shared = [p for p in parts if sum(p in OBJECTS[o] for o in TRAIN_OBJECTS) >= 2]
    assert len(shared) >= len(parts) - 2  # all but tip and back


def test_cues_are_shared_across_part_groups():
    # hold/carry share the handle but get different cues; hold, cut_with, sip share cue 0
    assert cue_index("hold") != cue_index("carry")
    assert (
        cue_index("carry") == cue_index("cut_with") == cue_index("drink_with") == 0
    )  # alphabetical in group
    groups = {}
    for a, p in AFFORDANCE_PART.items():
        groups.setdefault(p, []).append(cue_index(a))
    assert all(sorted(v) == list(range(len(v))) for v in groups.values())


def test_gt_marks_the_target_part(world):
    labels = world_labels()
    for item in read_testset(world, "Seen", labels=labels):
        gt = load_gt(item.gt_path)
        assert gt.max() == pytest.approx(1.0) and gt.mean() < 0.2
        img = np.asarray(Image.open(item.path).convert("RGB"), dtype=float)
        assert img.shape[:2] == gt.shape
    assert set(OBJECTS["cleaver"]) == {"handle", "blade"}


def test_seeded(tmp_path):
    cfg = WorldConfig(exo_per_pair=1, ego_per_object=1)
    a = make_affordance_world(tmp_path / "a", seed=1, config=cfg, splits=("Seen",))
    b = make_affordance_world(tmp_path / "b", seed=1, config=cfg, splits=("Seen",))
    f = "Seen/trainset/exocentric/hold/knife/hold_knife_0000.png"
    assert np.array_equal(np.asarray(Image.open(a / f)), np.asarray(Image.open(b / f)))


def test_without_cues_hold_and_carry_images_share_arm_colour():
    import random

    from fourfold.data.affordance_shapes import exocentric_image

    def arm_colours(aff, cues):
        img = exocentric_image(random.Random(5), WorldConfig(cues=cues, distractor_hand_p=0.0), aff, "knife")
        return {tuple(c) for c in img.reshape(-1, 3).astype(int)}

    # same rng: only the cue differs between the two affordances' renderings
    assert arm_colours("hold", False) == arm_colours("carry", False)
    assert arm_colours("hold", True) != arm_colours("carry", True)
