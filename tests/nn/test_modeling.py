"""save_pretrained / from_pretrained: round trip and every bad-checkpoint case names its problem."""

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fourfold.nn import CheckpointError, PretrainedModel


@dataclass
class BlockConfig:
    dim: int = 6
    hidden: int = 10
    kernel: tuple[int, int] = (3, 3)


@dataclass
class NetConfig:
    block: BlockConfig
    depth: int = 2
    tied: bool = True


class Net(PretrainedModel):
    config_class = NetConfig

    def __init__(self, config: NetConfig) -> None:
        super().__init__(config)
        d = config.block.dim
        self.embed = nn.Embedding(11, d)
        self.layers = nn.ModuleList(nn.Linear(d, d) for _ in range(config.depth))
        self.head = nn.Linear(d, 11, bias=False)
        self.norm = nn.BatchNorm1d(d)
        if config.tied:
            self.head.weight = self.embed.weight  # shared storage must survive safetensors

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


@pytest.fixture
def saved(tmp_path):
    model = Net(NetConfig(block=BlockConfig(dim=6)))
    model.norm.running_mean.fill_(0.5)  # buffers are saved too
    model.save_pretrained(tmp_path / "net")
    return model, tmp_path / "net"


def test_round_trip_restores_config_weights_and_outputs(saved):
    model, path = saved
    loaded = Net.from_pretrained(path)
    assert loaded.config == model.config
    assert isinstance(loaded.config.block, BlockConfig) and loaded.config.block.kernel == (3, 3)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    tokens = torch.randint(0, 11, (3, 5))
    assert torch.equal(model.eval()(tokens), loaded.eval()(tokens))
    assert loaded.head.weight.data_ptr() == loaded.embed.weight.data_ptr()  # tie rebuilt by __init__
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "Net" and config["block"]["dim"] == 6


def test_missing_weights_file_is_named(saved):
    _, path = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing weights file: .*model\.safetensors"):
        Net.from_pretrained(path)


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="pretrained directory not found"):
        Net.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"missing file: .*config\.json"):
        Net.from_pretrained(tmp_path / "empty")


def test_unknown_config_key_is_named(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["block"]["heads"] = 4
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unknown config key\(s\) \['heads'\] for BlockConfig"):
        Net.from_pretrained(path)


def test_shape_mismatch_names_key_and_both_shapes(saved):
    model, path = saved
    state = {k: v.clone().contiguous() for k, v in model._weights_to_save().items()}
    state["layers.1.weight"] = torch.zeros(6, 7)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"layers\.1\.weight: checkpoint \(6, 7\) vs model \(6, 6\)"):
        Net.from_pretrained(path)


def test_missing_and_unexpected_keys_are_listed(saved):
    model, path = saved
    state = {k: v.clone().contiguous() for k, v in model._weights_to_save().items()}
    del state["layers.0.bias"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"missing keys.*layers\.0\.bias.*unexpected keys.*extra\.weight"
    ):
        Net.from_pretrained(path)


def test_truncated_file_is_reported_as_corrupt(saved):
    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Net.from_pretrained(path)


def test_pickle_file_is_refused(saved):
    model, path = saved
    torch.save(model.state_dict(), path / "model.safetensors")  # a pickle under the safetensors name
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Net.from_pretrained(path)


def test_wrong_model_type_and_bad_json(saved, tmp_path):
    _, path = saved

    @dataclass
    class OtherConfig:
        dim: int = 1

    class Other(PretrainedModel):
        config_class = OtherConfig

    with pytest.raises(CheckpointError, match="holds a Net, not a Other"):
        Other.from_pretrained(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Net.from_pretrained(path)


def test_failed_save_keeps_previous_checkpoint(saved, monkeypatch):
    model, path = saved
    before = (path / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("fourfold.nn.modeling.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(path)
    assert (path / "model.safetensors").read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_config_overrides_and_type_check(saved):
    _, path = saved
    loaded = Net.from_pretrained(path, tied=True)
    assert loaded.config.tied
    with pytest.raises(TypeError, match="expects a NetConfig"):
        Net(BlockConfig())


def test_extra_files_are_written_with_the_weights(tmp_path):
    class Labelled(Net):
        def _extra_files(self) -> dict[str, str]:
            return {"labels.json": '["a", "b"]'}

    Labelled(NetConfig(block=BlockConfig())).save_pretrained(tmp_path / "labelled")
    assert json.loads((tmp_path / "labelled" / "labels.json").read_text()) == ["a", "b"]
    assert (tmp_path / "labelled" / "model.safetensors").is_file()
