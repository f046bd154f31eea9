"""``fourfold data shards`` / ``verify``: a folder dataset to shards and back, and a corrupt shard caught."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fourfold.data.cli import app
from fourfold.data.shards import ShardDataset


def _folder(root):
    for i in range(7):
        sub = root / ("train" if i < 5 else "valid")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"clip{i}.wav").write_bytes(b"RIFF" + bytes([i]) * 600)
        (sub / f"clip{i}.meta.json").write_text(json.dumps({"label": i}))
    (root / ".cache").mkdir()
    (root / ".cache" / "junk.bin").write_bytes(b"x")  # hidden: skipped
    (root / "README").write_text("no extension: skipped")


def test_folder_to_shards_and_verify(tmp_path):
    _folder(tmp_path / "src")
    runner = CliRunner()
    args = ["shards", "--from", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--max-samples", "3"]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    samples = list(ShardDataset(tmp_path / "out", decode="raw", shuffle=False))
    assert [s["__key__"] for s in samples] == [f"train/clip{i}" for i in range(5)] + [
        "valid/clip5",
        "valid/clip6",
    ]
    assert samples[6]["wav"] == b"RIFF" + bytes([6]) * 600
    assert json.loads(samples[6]["meta.json"]) == {"label": 6}
    decoded = list(ShardDataset(tmp_path / "out", shuffle=False))
    assert decoded[2]["meta"] == {"label": 2} and decoded[2]["wav"][:4] == b"RIFF"
    again = runner.invoke(app, [*args, "--no-progress"])  # a finished conversion re-runs as a no-op
    assert again.exit_code == 0, again.output

    ok = runner.invoke(app, ["verify", str(tmp_path / "out"), "--decode", "--no-progress"])
    assert ok.exit_code == 0 and "3 shards, 7 samples" in ok.output
    shard = tmp_path / "out" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    _, members = json.loads((tmp_path / "out" / "shard-000001.json").read_text())["samples"][0]
    offset, size, _ = members["wav"]
    data[offset + size // 2] ^= 0x01  # one bit inside a member's data
    shard.write_bytes(bytes(data))
    bad = runner.invoke(app, ["verify", str(tmp_path / "out"), "--no-progress"])
    assert bad.exit_code == 1 and "shard-000001.tar is corrupt" in bad.output
