"""SaRA: fine-tune any ``nn.Module`` by re-training its smallest-magnitude weights (arXiv 2409.06633).

```python
from fourfold import sara
cfg = sara.SaraConfig(threshold=2e-3, lambda_rank=5e-3, progressive_at=0.5)
h = sara.wrap(unet, cfg)
opt = torch.optim.AdamW(h.parameters(), lr=h.learning_rate(), weight_decay=1e-2)
```
See docs/sara.md.
"""

from fourfold.sara.config import SaraConfig, learning_rate_for_threshold
from fourfold.sara.handle import SaraHandle, wrap
from fourfold.sara.io import SaraDelta, combine, import_official, load, read_adapter
from fourfold.sara.optim import SaraAdamW

__all__ = [
    "SaraAdamW",
    "SaraConfig",
    "SaraDelta",
    "SaraHandle",
    "combine",
    "import_official",
    "learning_rate_for_threshold",
    "load",
    "read_adapter",
    "wrap",
]
