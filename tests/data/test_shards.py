"""Tar shards: field round trips, rank/worker splits, seeded shuffles, corruption and resumable writing."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.data.helpers import SlowRows, flat, read_ids, write_numbered

from fourfold.data import shards as shards_module
from fourfold.data.shards import INDEX_NAME, ShardDataset, ShardError, ShardWriter, write_shards_from

ARRAYS = {
    "f16.npy": np.arange(6, dtype=np.float16).reshape(2, 3),
    "i64.npy": np.array([-(2**40), 3], dtype=np.int64),
    "mask.npy": np.array([[True, False]]),
    "u8.npy": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
}


def _sample(i: int) -> dict:
    return {
        "__key__": f"clip{i:03d}",
        **ARRAYS,
        "latent.npy": torch.full((3, i + 1), float(i)),  # variable shapes per sample
        "nan.npy": torch.tensor([float("nan"), -0.0, float("inf")]),
        "caption.txt": f"a dog barks, ünïcode {i}",
        "label.cls": i,
        "score.json": 0.25 * i,
        "meta.json": {"fps": 25, "tags": ["a", "b"], "i": i},
        "audio.wav": b"RIFF" + bytes(range(i)),
        "frame.png": b"\x89PNG" + bytes([i]) * 700,  # crosses a 512-byte tar block
        "video.mp4": b"",
    }


def _check(sample: dict, i: int, as_torch: bool) -> None:
    expected = _sample(i)
    assert sample["__key__"] == expected["__key__"]
    for name, value in {
        **ARRAYS,
        "latent.npy": expected["latent.npy"],
        "nan.npy": expected["nan.npy"],
    }.items():
        got = sample[name[:-4]]
        assert isinstance(got, torch.Tensor if as_torch else np.ndarray)
        want = value if isinstance(value, np.ndarray) else value.numpy()
        got = got.numpy() if as_torch else got
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), name  # bit-exact, NaN and -0.0 included
    assert sample["caption"] == expected["caption.txt"]
    assert sample["label"] == i and isinstance(sample["label"], int)
    assert sample["score"] == 0.25 * i
    assert sample["meta"] == expected["meta.json"]
    for name in ("audio.wav", "frame.png", "video.mp4"):
        assert sample[name.split(".")[0]] == expected[name]


@pytest.mark.parametrize("decode", ["torch", "numpy"])
def test_every_field_type_round_trips(tmp_path, decode):
    with ShardWriter(tmp_path / "s", max_samples_per_shard=2) as writer:
        for i in range(5):
            writer.write(_sample(i))
    samples = list(ShardDataset(tmp_path / "s", decode=decode, shuffle=False))
    assert len(samples) == 5
    for i, sample in enumerate(samples):
        _check(sample, i, decode == "torch")


def test_shards_are_plain_tars_readable_without_our_index(tmp_path):
    with ShardWriter(tmp_path / "s", max_samples_per_shard=2) as writer:
        for i in range(5):
            writer.write(_sample(i))
    with tarfile.open(tmp_path / "s" / "shard-000000.tar") as tar:  # WebDataset layout: key.field.ext
        assert tar.getnames()[:2] == ["clip000.f16.npy", "clip000.i64.npy"]
        assert tar.extractfile("clip001.caption.txt").read().decode() == "a dog barks, ünïcode 1"
    for extra in [INDEX_NAME, *(p.name for p in (tmp_path / "s").glob("shard-*.json"))]:
        (tmp_path / "s" / extra).unlink()
    samples = list(ShardDataset(str(tmp_path / "s" / "shard-{000000..000002}.tar"), shuffle=False))
    for i, sample in enumerate(samples):
        _check(sample, i, True)
    raw = next(iter(ShardDataset(tmp_path / "s", decode="raw", shuffle=False)))
    assert raw["label.cls"] == b"0" and raw["audio.wav"] == b"RIFF"


def test_foreign_webdataset_members_and_custom_decoders(tmp_path):
    path = tmp_path / "foreign.tar"
    with tarfile.open(path, "w") as tar:
        for key, data in [
            ("a/000.cls", b"3"),
            ("a/000.wav", b"W0"),
            ("a/001.cls", b"4"),
            ("a/001.wav", b"W1"),
        ]:
            info = tarfile.TarInfo(key)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = ShardDataset(path, shuffle=False, decoders={"wav": lambda b: b.decode().lower()})
    assert list(ds) == [
        {"__key__": "a/000", "cls": 3, "wav": "w0"},
        {"__key__": "a/001", "cls": 4, "wav": "w1"},
    ]


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ({"__key__": "a", "x.wav": torch.zeros(2)}, "'x.wav'"),
        ({"__key__": "a", "x.npy": "text"}, "'x.npy'"),
        ({"__key__": "a", "x.npy": torch.zeros(2, dtype=torch.bfloat16)}, "bfloat16"),
        ({"__key__": "a", "x.cls": 1.5}, "'x.cls'"),
        ({"__key__": "a", "x.txt": 3}, "'x.txt'"),
        ({"__key__": "a", "x.json": {1, 2}}, "JSON"),
        ({"__key__": "a.b", "x.txt": "t"}, "without '.'"),
        ({"x.txt": "t"}, "key"),
        ({"__key__": "a"}, "no fields"),
    ],
)
def test_bad_samples_are_named(tmp_path, sample, message):
    with pytest.raises(ShardError, match=message), ShardWriter(tmp_path / "s") as writer:
        writer.write(sample)


def test_duplicate_keys_and_existing_output_are_refused(tmp_path):
    with pytest.raises(ShardError, match="duplicate"), ShardWriter(tmp_path / "s") as writer:
        writer.write({"__key__": "a", "x.txt": "t"})
        writer.write({"__key__": "a", "x.txt": "u"})
    write_numbered(tmp_path / "t", 3, 2)
    with pytest.raises(ShardError, match="resume=True"):
        ShardWriter(tmp_path / "t", 2)


def test_max_bytes_rolls_over_to_a_new_shard(tmp_path):
    with ShardWriter(tmp_path / "s", max_samples_per_shard=None, max_bytes=20_000) as writer:
        for i in range(10):
            writer.write({"__key__": f"k{i}", "blob.bin": bytes(3000)})
    index = json.loads((tmp_path / "s" / INDEX_NAME).read_text())
    assert len(index["shards"]) > 1 and index["num_samples"] == 10
    assert all(s["size"] <= 20_000 for s in index["shards"])
    assert [s["__key__"] for s in ShardDataset(tmp_path / "s", shuffle=False)] == [f"k{i}" for i in range(10)]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("batch_size", [None, 6])
def test_ranks_read_every_sample_exactly_once_per_epoch(tmp_path, world, batch_size):
    write_numbered(tmp_path / "s", 36, 5)  # uneven last shard
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world):
            ds = ShardDataset(tmp_path / "s", shuffle_buffer=8, seed=1, batch_size=batch_size)
            ds.set_rank(rank, world)
            ds.set_epoch(epoch)
            ids = [s["i"] for s in ds]
            assert len(ids) == len(ds)
            per_rank.append(ids)
        everything = flat(per_rank)
        assert sorted(everything) == list(range(36)), (epoch, rank)  # a cover without overlap
        assert max(map(len, per_rank)) - min(map(len, per_rank)) <= (batch_size or 1)


def test_with_a_batch_size_ranks_get_their_rows_of_the_single_process_batches(tmp_path):
    write_numbered(tmp_path / "s", 40, 7)
    single = ShardDataset(tmp_path / "s", shuffle_buffer=10, seed=4, batch_size=8)
    single.set_epoch(3)
    global_batches = read_ids(single, batch_size=8)
    assert len(global_batches) == 5 and sorted(flat(global_batches)) == list(range(40))
    for rank in (0, 1):
        ds = ShardDataset(tmp_path / "s", shuffle_buffer=10, seed=4, batch_size=8)
        ds.set_rank(rank, 2)
        ds.set_epoch(3)
        assert read_ids(ds, batch_size=4) == [b[rank * 4 : (rank + 1) * 4] for b in global_batches]


def test_an_epoch_is_cut_to_whole_global_batches(tmp_path):
    write_numbered(tmp_path / "s", 23, 5)
    ds = ShardDataset(tmp_path / "s", seed=0, batch_size=8)
    ids = [s["i"] for s in ds]
    assert len(ids) == len(ds) == 16 and len(set(ids)) == 16


def test_shuffle_is_a_pure_function_of_seed_and_epoch(tmp_path):
    write_numbered(tmp_path / "s", 50, 6)

    def order(seed: int, epoch: int, **kw) -> list[int]:
        ds = ShardDataset(tmp_path / "s", seed=seed, **{"shuffle_buffer": 12, **kw})
        ds.set_epoch(epoch)
        return [s["i"] for s in ds]

    first = order(0, 0)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert order(0, 0) == first  # a fresh object, same stream
    assert order(0, 1) != first and sorted(order(0, 1)) == list(range(50))
    assert order(1, 0) != first
    assert order(0, 0, shuffle=False) == list(range(50))
    # without a buffer only the shard order changes: runs of 6 consecutive samples stay together
    shards_only = order(0, 0, shuffle_buffer=0)
    assert shards_only != list(range(50)) and sorted(shards_only) == list(range(50))
    assert all(b - a == 1 for a, b in itertools.pairwise(shards_only) if a // 6 == b // 6)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine
def test_workers_yield_the_single_process_batches(tmp_path):
    write_numbered(tmp_path / "s", 45, 4)
    for rank, world in [(0, 1), (1, 2)]:
        ds = ShardDataset(tmp_path / "s", shuffle_buffer=9, seed=2, batch_size=8 * world)
        ds.set_rank(rank, world)
        ds.set_epoch(1)
        serial = read_ids(ds, batch_size=8)
        assert read_ids(ds, batch_size=8, num_workers=2) == serial
        assert read_ids(ds, batch_size=8, num_workers=3) == serial
    # without batch_size, workers take turns sample by sample: reproducible and still a full epoch
    loose = ShardDataset(tmp_path / "s", shuffle_buffer=9, seed=2)
    twice = [read_ids(loose, batch_size=4, num_workers=2) for _ in range(2)]
    assert twice[0] == twice[1] and sorted(flat(twice[0])) == list(range(45))


def test_truncated_shard_is_named(tmp_path):
    root = write_numbered(tmp_path / "s", 12, 4)
    shard = root / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:1500])
    with pytest.raises(ShardError, match=r"shard-000001\.tar is truncated"):
        ShardDataset(root, shuffle=False)  # found when the dataset is built, before any epoch
    (root / "shard-000001.json").unlink()  # without its member table the header scan must notice too
    (root / INDEX_NAME).unlink()
    with pytest.raises(ShardError, match=r"shard-000001\.tar"):
        ShardDataset(root, shuffle=False)


def test_flipped_byte_fails_the_crc_and_names_the_member(tmp_path):
    root = write_numbered(tmp_path / "s", 8, 4)
    table = json.loads((root / "shard-000001.json").read_text())
    key, members = table["samples"][2]
    offset = members["x.npy"][0] + members["x.npy"][1] - 1
    data = bytearray((root / "shard-000001.tar").read_bytes())
    data[offset] ^= 0xFF
    (root / "shard-000001.tar").write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"shard-000001\.tar is corrupt: member {key}\.x\.npy"):
        list(ShardDataset(root, shuffle=False))


def test_undecodable_member_is_named(tmp_path):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [("k0.x.npy", b"not a numpy file"), ("k0.y.json", b"{}")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ShardError, match=r"bad\.tar: member k0\.x\.npy could not be decoded as \.npy"):
        list(ShardDataset(path, shuffle=False))
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"\x01" * 2048)
    with pytest.raises(ShardError, match=r"garbage\.tar"):
        ShardDataset(garbage)


class _Rows(torch.utils.data.Dataset):
    """Map-style rows that count reads and can fail at one index (a conversion killed midway)."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.reads = n, fail_at, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i == self.fail_at:
            raise RuntimeError("killed")
        self.reads.append(i)
        return {"x.npy": np.full(3, i, dtype=np.int32), "caption.txt": f"row {i}"}


def test_conversion_resumes_after_a_crash_and_matches_a_straight_run(tmp_path):
    write_shards_from(_Rows(47), tmp_path / "straight", max_samples_per_shard=10, progress=False)
    with pytest.raises(RuntimeError, match="killed"):
        write_shards_from(
            _Rows(47, fail_at=25), tmp_path / "resumed", max_samples_per_shard=10, progress=False
        )
    assert not list((tmp_path / "resumed").glob(".tmp-*"))  # the half-written shard is gone
    with pytest.raises(ShardError, match="did not finish"):
        ShardDataset(tmp_path / "resumed")
    assert ShardDataset(tmp_path / "resumed", allow_incomplete=True).num_samples == 20
    rows = _Rows(47)
    write_shards_from(rows, tmp_path / "resumed", max_samples_per_shard=10, progress=False)
    assert rows.reads == list(range(20, 47))  # complete shards were not redone
    for name in sorted(p.name for p in (tmp_path / "straight").iterdir()):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    keys = [s["__key__"] for s in ShardDataset(tmp_path / "resumed", shuffle=False)]
    assert keys == [f"{i:09d}" for i in range(47)]
    with pytest.raises(ShardError, match="shard boundaries"):
        write_shards_from(rows, tmp_path / "resumed", max_samples_per_shard=5, progress=False)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_set_start_skips_batches_without_reading_them(tmp_path, num_workers):
    root = write_numbered(tmp_path / "s", 40, 6)
    ds = ShardDataset(root, shuffle_buffer=7, seed=5, batch_size=8)
    ds.set_epoch(2)
    full = read_ids(ds, batch_size=8)
    assert ds.batches_per_epoch() == len(full) == 5
    # damage a sample of the first batch: a resumed epoch that starts after it must never open it
    victim = full[0][0]
    shard, row = victim // 6, victim % 6
    table = json.loads((root / f"shard-{shard:06d}.json").read_text())
    offset, size, _ = table["samples"][row][1]["x.npy"]
    data = bytearray((root / f"shard-{shard:06d}.tar").read_bytes())
    data[offset + size - 1] ^= 0xFF
    (root / f"shard-{shard:06d}.tar").write_bytes(bytes(data))
    ds.set_epoch(2)
    ds.set_start(1)
    assert read_ids(ds, batch_size=8, num_workers=num_workers) == full[1:]
    ds.set_epoch(2)  # a new epoch starts from its beginning again (read in-process: a worker that
    with pytest.raises(ShardError, match="is corrupt"):  # raised takes seconds to shut down)
        read_ids(ds, batch_size=8)
    with pytest.raises(ValueError, match="outside"):
        ds.set_start(6)
    with pytest.raises(ValueError, match="batch_size"):
        ShardDataset(root).set_start(1)


def test_many_small_shards_with_a_wide_shuffle_buffer(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "OPEN_SHARDS", 3)
    write_numbered(tmp_path / "s", 24, 3)  # 8 shards: more than the reader may keep open at once
    ds = ShardDataset(tmp_path / "s", shuffle_buffer=12, seed=0)
    ids = [s["i"] for s in ds]
    assert sorted(ids) == list(range(24))
    assert all(shard.samples is None for shard in ds.shards)  # member tables are dropped after the epoch
    assert [s["i"] for s in ds] == ids


def test_sigkilled_conversion_resumes_to_identical_shards(tmp_path):
    script = (
        "import sys; from tests.data.helpers import SlowRows; from fourfold.data.shards import write_shards_from; "
        "write_shards_from(SlowRows(60, delay=0.02), sys.argv[1], max_samples_per_shard=10, progress=False)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "killed")], env=env)
    index = tmp_path / "killed" / INDEX_NAME
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if index.is_file() and len(json.loads(index.read_text())["shards"]) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(index.read_text())
    assert not done["complete"] and 2 <= len(done["shards"]) < 6  # killed mid-way
    write_shards_from(SlowRows(60), tmp_path / "killed", max_samples_per_shard=10, progress=False)
    write_shards_from(SlowRows(60), tmp_path / "straight", max_samples_per_shard=10, progress=False)
    names = sorted(p.name for p in (tmp_path / "straight").iterdir())
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == names  # no temporaries left behind
    for name in names:
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
