import pytest
import torch

from fourfold.songcreator.config import DSLMConfig
from fourfold.songcreator.dslm import DSLM

# The machine is shared: one intra-op thread is many times faster than two under contention.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dslm():
    torch.manual_seed(0)
    return DSLM(DSLMConfig.tiny(codebook_size=32, lyrics_vocab_size=64)).eval()
