import numpy as np
import pytest


def make_clicks(times, sr=22050, seconds=2.0, seed=0):
    """Decaying noise bursts (20 ms, 3 ms decay) at ``times`` seconds over faint noise, float32 (samples,)."""
    rng = np.random.default_rng(seed)
    x = 0.003 * rng.standard_normal(int(seconds * sr)).astype(np.float32)
    n = int(0.02 * sr)
    for t in times:
        i = int(t * sr)
        x[i : i + n] += (0.8 * np.exp(-np.arange(n) / (0.003 * sr)) * rng.standard_normal(n)).astype(
            np.float32
        )
    return x


@pytest.fixture
def clicks():
    return make_clicks
