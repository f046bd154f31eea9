"""SaRA: fine-tune any ``nn.Module`` by re-training its smallest-magnitude weights (arXiv 2409.06633).

```python
from fourfold import sara
cfg = sara.SaraConfig(threshold=2e-3, lambda_rank=5e-3, progressive_at=0.5)
h = sara.wrap(unet, cfg)
opt = torch.optim.AdamW(h.parameters(), lr=h.learning_rate(), weight_decay=1e-2)
```
See docs/sara.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names are re-exported lazily so ``fourfold --help`` (which imports fourfold.sara.cli, and so this
# package) does not pay for importing torch.
_EXPORTS = {
    "SaraAdamW": "fourfold.sara.optim",
    "SaraConfig": "fourfold.sara.config",
    "learning_rate_for_threshold": "fourfold.sara.config",
    "SaraDelta": "fourfold.sara.io",
    "combine": "fourfold.sara.io",
    "import_official": "fourfold.sara.io",
    "load": "fourfold.sara.io",
    "read_adapter": "fourfold.sara.io",
    "SaraHandle": "fourfold.sara.handle",
    "wrap": "fourfold.sara.handle",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fourfold.sara' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
