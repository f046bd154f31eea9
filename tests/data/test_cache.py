"""FeatureCache: bit-exact entries, fingerprint isolation, resume after a killed run, clear errors."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from fourfold.data.cache import CacheError, FeatureCache, MissingFeatureError, module_fingerprint

KEYS = [f"clip{i:03d}" for i in range(10)]


class Encoder:
    """A deterministic "expensive" encoder that records which keys it was asked for."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, keys: list[str]) -> dict[str, torch.Tensor]:
        self.seen += keys
        ids = torch.tensor([int(k[4:]) for k in keys])
        g = torch.Generator().manual_seed(int(ids.sum()))
        hidden = torch.randn(len(keys), 3, 4, generator=g)
        hidden[:, 0, 0] = float("nan")  # stored bits, not values: NaN and -0.0 must survive
        hidden[:, 0, 1] = -0.0
        return {"hidden": hidden, "tokens": ids[:, None] * 7 + torch.arange(2), "bf16": hidden.bfloat16()}


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def test_entries_equal_the_compute_output_bit_for_bit(tmp_path):
    encoder = Encoder()
    cache = FeatureCache(tmp_path, {"name": "toy", "v": 1}, shard_size=4)
    feats = cache.get_or_compute(KEYS, encoder, batch_size=3, progress=False)
    assert encoder.seen == KEYS and len(feats) == len(KEYS)
    for start in range(0, 10, 3):
        batch = KEYS[start : start + 3]
        expected = Encoder()(batch)
        for row, key in enumerate(batch):
            got = FeatureCache(tmp_path, {"name": "toy", "v": 1}).load(key)  # a fresh reader from disk
            assert sorted(got) == ["bf16", "hidden", "tokens"]
            for name, tensor in expected.items():
                assert got[name].dtype == tensor.dtype and got[name].shape == tensor[row].shape
                assert _bits(got[name]) == _bits(tensor[row]), (key, name)
    assert len(list(cache.dir.glob("part-*.safetensors"))) == 3  # 10 entries in files of <= 4


def test_variable_shapes_and_plain_tensors(tmp_path):
    cache = FeatureCache(tmp_path, {"name": "latents"})
    lengths = {"a": 3, "b": 5, "c": 1}
    cache.get_or_compute(["a", "b"], lambda ks: [torch.arange(lengths[k] * 2.0) for k in ks], progress=False)
    cache.get_or_compute(["c"], lambda ks: torch.ones(len(ks), 4, dtype=torch.int8), progress=False)
    assert torch.equal(cache.load("b"), torch.arange(10.0))
    assert torch.equal(cache.load("c"), torch.ones(4, dtype=torch.int8))
    loader = DataLoader(cache.dataset(["a", "b", "a"]), batch_size=None, num_workers=2)
    assert [t.shape[0] for t in loader] == [6, 10, 6]


def test_a_changed_fingerprint_recomputes_and_the_same_one_reuses(tmp_path):
    small, other = nn.Linear(2, 3), nn.Linear(2, 3)
    fp = {"name": "enc", "weights": module_fingerprint(small), "sample_rate": 16000, "code": "1.0"}
    first = Encoder()
    FeatureCache(tmp_path, fp).get_or_compute(KEYS[:4], first, progress=False)
    again = Encoder()
    FeatureCache(tmp_path, dict(fp)).get_or_compute(KEYS[:4], again, progress=False)
    assert again.seen == []  # same fingerprint: nothing recomputed
    for change in ({"sample_rate": 22050}, {"code": "1.1"}, {"weights": module_fingerprint(other)}):
        encoder = Encoder()
        cache = FeatureCache(tmp_path, {**fp, **change})
        cache.get_or_compute(KEYS[:4], encoder, progress=False)
        assert encoder.seen == KEYS[:4], change
    assert len({p.name for p in tmp_path.iterdir()}) == 4
    assert json.loads((cache.dir / "fingerprint.json").read_text())["weights"] == module_fingerprint(other)
    assert module_fingerprint(small) == module_fingerprint(small) != module_fingerprint(other)


def test_a_killed_run_keeps_its_finished_files_and_resumes(tmp_path):
    calls = []

    def dies_on_third_batch(keys):
        calls.append(keys)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a Ctrl-C or kill looks like from inside the loop
        return Encoder()(keys)

    with pytest.raises(KeyboardInterrupt):
        FeatureCache(tmp_path, {"name": "k"}, shard_size=2).get_or_compute(
            KEYS, dies_on_third_batch, batch_size=2, progress=False
        )
    # a temporary file left by a writer that died on this host is cleaned up on the next open
    dead = (
        FeatureCache(tmp_path, {"name": "k"}).dir
        / f".tmp-{socket.gethostname()}-999999999-part-x.safetensors"
    )
    dead.write_bytes(b"partial")
    live = dead.with_name(f".tmp-{socket.gethostname()}-{os.getpid()}-part-y.safetensors")  # still writing
    live.write_bytes(b"partial")
    resumed = FeatureCache(tmp_path, {"name": "k"}, shard_size=2)
    assert not dead.exists() and live.exists()
    assert sorted(resumed.keys()) == KEYS[:4]
    encoder = Encoder()
    resumed.get_or_compute(KEYS, encoder, batch_size=2, progress=False)
    assert encoder.seen == KEYS[4:]
    fresh = Encoder()(KEYS[4:6])
    assert _bits(resumed.load(KEYS[5])["hidden"]) == _bits(fresh["hidden"][1])


def test_missing_keys_are_named(tmp_path):
    cache = FeatureCache(tmp_path, {"name": "m"})
    cache.get_or_compute(KEYS[:2], Encoder(), progress=False)
    with pytest.raises(MissingFeatureError, match=r"key 'nope' is not in the feature cache .*get_or_compute"):
        cache.load("nope")
    with pytest.raises(MissingFeatureError, match=r"2 of 3 keys .*clip005"):
        cache.dataset([KEYS[0], KEYS[5], KEYS[6]])


def test_corrupt_or_truncated_files_are_named(tmp_path):
    cache = FeatureCache(tmp_path, {"name": "c"}, shard_size=5)
    cache.get_or_compute(KEYS, Encoder(), progress=False)
    first, second = sorted(cache.dir.glob("part-*.safetensors"))
    first.write_bytes(first.read_bytes()[:-10])
    with pytest.raises(CacheError, match=rf"{first.name} is truncated"):
        FeatureCache(tmp_path, {"name": "c"})
    first.unlink()
    second.write_bytes(b"\xff" * 64)
    with pytest.raises(CacheError, match=rf"{second.name} is corrupt"):
        FeatureCache(tmp_path, {"name": "c"})


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda ks: torch.zeros(len(ks) + 1, 2), "first dim"),
        (lambda ks: {"a": torch.zeros(len(ks)), "b": [0] * len(ks)}, "first dim"),
        (lambda ks: [1.0] * len(ks), "expected a torch.Tensor"),
        (lambda ks: "text", "must return"),
    ],
)
def test_unusable_compute_outputs_are_refused(tmp_path, output, message):
    cache = FeatureCache(tmp_path, {"name": "bad"})
    with pytest.raises(CacheError, match=message):
        cache.get_or_compute(["a", "b"], output, progress=False)
    assert len(cache) == 0 and not [p for p in os.listdir(cache.dir) if p != "fingerprint.json"]
