"""AGD20K reader on a tiny fake tree: LOCATE's id order, GT matched by stem, clear errors."""

import json

import numpy as np
import pytest
from PIL import Image

from fourfold.data.agd20k import (
    SEEN_AFFORDANCES,
    UNSEEN_AFFORDANCES,
    AGD20KError,
    load_gt,
    read_exocentric,
    read_mask_testset,
    read_testset,
    read_train,
)


def img(path, color=(10, 20, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 8), color).save(path)


def make_tree(root):
    for aff, obj in [("hold", "knife"), ("cut_with", "knife"), ("hold", "cup")]:
        for k in range(2):
            img(root / "Seen/trainset/exocentric" / aff / obj / f"{aff}_{obj}_{k}.jpg")
    img(root / "Seen/testset/egocentric/hold/knife/a.jpeg")
    img(root / "Seen/testset/GT/hold/knife/a.png", 128, "L")
    img(root / "Seen/testset/egocentric/hold/knife/b.jpg")  # no GT: not a test item
    img(root / "Seen/testset/egocentric/cut_with/knife/c.jpg")
    img(root / "Seen/testset/GT/cut_with/knife/c.png", (255, 0, 0))  # RGB GT


def test_locate_label_order():
    assert SEEN_AFFORDANCES[:4] == ("beat", "boxing", "brush_with", "carry") and len(SEEN_AFFORDANCES) == 36
    assert UNSEEN_AFFORDANCES[0] == "carry" and len(UNSEEN_AFFORDANCES) == 25


def test_reader_on_fake_tree(tmp_path):
    make_tree(tmp_path)
    train = read_train(tmp_path, "Seen")
    assert len(train) == 6 and {t.obj for t in train} == {"knife", "cup"}
    test = read_testset(tmp_path, "Seen")
    assert [t.path.name for t in test] == ["c.jpg", "a.jpeg"]  # sorted by affordance folder, .jpeg matched
    assert load_gt(test[1].gt_path).max() == pytest.approx(128 / 255)
    assert load_gt(test[0].gt_path).max() == pytest.approx(round(0.299 * 255) / 255)  # cv2-style gray


def test_broken_trees(tmp_path):
    with pytest.raises(AGD20KError, match="not found"):
        read_train(tmp_path, "Seen")
    with pytest.raises(AGD20KError, match="split"):
        read_train(tmp_path, "Train")
    make_tree(tmp_path)
    img(tmp_path / "Seen/testset/GT/hold/knife/zzz.png", 1, "L")
    with pytest.raises(AGD20KError, match="zzz"):
        read_testset(tmp_path, "Seen")
    img(tmp_path / "Seen/trainset/exocentric/levitate/rock/x.jpg")
    with pytest.raises(AGD20KError, match="levitate"):
        read_train(tmp_path, "Seen")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(AGD20KError, match=r"bad\.png"):
        load_gt(bad)


def test_folder_without_objects_and_single_label(tmp_path):
    img(tmp_path / "f/hold/a.jpg")
    with pytest.raises(AGD20KError, match="one affordance"):
        read_exocentric(tmp_path / "f")
    img(tmp_path / "f/carry/b.png")
    items = read_exocentric(tmp_path / "f")
    assert [(i.affordance, i.obj) for i in items] == [("carry", None), ("hold", None)]


def _mask_tree(root, label_map=None):
    (root / "images").mkdir(parents=True)
    (root / "masks" / "grasp").mkdir(parents=True)
    Image.new("RGB", (8, 6), (10, 20, 30)).save(root / "images" / "a.jpg")
    Image.new("RGB", (8, 6), (10, 20, 30)).save(root / "images" / "b.jpeg")
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:5] = 3  # a label index, not 255: any non-zero pixel is the part
    Image.fromarray(mask).save(root / "masks" / "grasp" / "a.png")
    Image.fromarray(mask).save(root / "masks" / "grasp" / "b.png")
    (root / "label_map.json").write_text(json.dumps(label_map or {"grasp": "hold"}))
    return root


def test_mask_testset_reader_binarises_and_maps_labels(tmp_path):
    items = read_mask_testset(_mask_tree(tmp_path / "iit"))
    assert [(it.path.name, it.affordance, it.binary_gt) for it in items] == [
        ("a.jpg", "hold", True),
        ("b.jpeg", "hold", True),
    ]
    gt = load_gt(items[0].gt_path, binary=True)
    assert gt.sum() == 6 and set(np.unique(gt)) == {0.0, 1.0}


def test_mask_testset_broken_trees(tmp_path):
    with pytest.raises(AGD20KError, match="images folder"):
        (tmp_path / "e").mkdir()
        read_mask_testset(tmp_path / "e")
    root = _mask_tree(tmp_path / "m", {"cut": "cut with"})
    with pytest.raises(AGD20KError, match="no entry for 'grasp'"):
        read_mask_testset(root)
    root = _mask_tree(tmp_path / "o")
    (root / "images" / "b.jpeg").unlink()
    with pytest.raises(AGD20KError, match=r"without an image.*\['b'\]"):
        read_mask_testset(root)
    root = _mask_tree(tmp_path / "j")
    (root / "label_map.json").write_text("{not json")
    with pytest.raises(AGD20KError, match="not valid JSON"):
        read_mask_testset(root)
