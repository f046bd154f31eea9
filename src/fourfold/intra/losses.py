"""INTRA's losses (§3.2–3.3, Eq. 2–4): the interaction-relationship-guided contrastive loss L_inter and
the object-variance mitigation loss L_obj, both SupCon-form over the 2N views of a batch.

With s_ik = z_i·z_k/τ and log p_ij = s_ij − log Σ_{k≠i} exp(s_ik):

    L_inter = mean_i [ −1/c_i · Σ_{j≠i} R[y_i, y_j] · log p_ij ],   c_i = n(y_i) − 1  (Eq. 2)
    L_obj   = mean_i [ −1/(m(o_i) − 1) · Σ_{j≠i} 1[o_i = o_j] · log p_ij ]           (Eq. 3)
    L       = L_inter + λ_obj · L_obj                                                 (Eq. 4)

Our readings of open points (docs/intra.md): j = i is excluded from the sums; the mean runs over anchors
that have at least one positive; c_i counts same-label views as printed ("label"), or the R-positives
("positives"); anchors with an unknown object (−1) are skipped in L_obj.
"""

from __future__ import annotations

import torch

__all__ = [
    "UNKNOWN_OBJECT",
    "intra_loss",
    "object_variance_loss",
    "relation_contrastive_loss",
    "weighted_supcon",
]

UNKNOWN_OBJECT = -1


def _log_prob(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, P) -> (N, N) log p_ij with the anchor itself left out of the denominator; diagonal set to 0."""
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    return logp.masked_fill(eye, 0.0)


def weighted_supcon(logp: torch.Tensor, weights: torch.Tensor, normalizer: torch.Tensor) -> torch.Tensor:
    """mean over anchors with normalizer > 0 of −(1/c_i) Σ_j W_ij log p_ij. ``weights`` (N,N), diagonal ignored."""
    eye = torch.eye(len(logp), dtype=torch.bool, device=logp.device)
    weights = weights.to(logp.dtype).masked_fill(eye, 0.0)
    valid = (normalizer > 0) & (weights.sum(1) > 0)
    if not bool(valid.any()):
        return logp.sum() * 0.0  # keeps the graph: no anchor has a positive
    per_anchor = -(weights * logp).sum(1)[valid] / normalizer[valid].to(logp.dtype)
    return per_anchor.mean()


def relation_contrastive_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    relation: torch.Tensor,
    temperature: float = 0.2,
    normalizer: str = "label",
) -> torch.Tensor:
    """L_inter (Eq. 2). z (N,P) L2-normalised; labels (N,) long into ``relation`` (L,L) bool/float.

    With ``relation = I`` this is SupCon (Khosla et al. 2020), the paper's Tab. 4 baseline.
    """
    weights = relation.to(z.device)[labels][:, labels]  # (N, N): R[y_i, y_j]
    same = labels[:, None] == labels[None, :]
    if normalizer == "label":
        count = same.sum(1) - 1  # n(y_i) − 1 views share the anchor's label
    elif normalizer == "positives":
        count = weights.to(torch.long).sum(1) - weights.diagonal().to(torch.long)
    else:
        raise ValueError(f"normalizer must be 'label' or 'positives', got {normalizer!r}")
    return weighted_supcon(_log_prob(z, temperature), weights, count)


def object_variance_loss(z: torch.Tensor, objects: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """L_obj (Eq. 3): pulls views of the same object together; ``objects`` (N,) long, −1 = unknown (skipped)."""
    known = objects != UNKNOWN_OBJECT
    same = (objects[:, None] == objects[None, :]) & known[:, None] & known[None, :]
    count = same.sum(1) - known.to(torch.long)
    return weighted_supcon(_log_prob(z, temperature), same, count)


def intra_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    objects: torch.Tensor,
    relation: torch.Tensor,
    *,
    temperature: float = 0.2,
    lambda_obj: float = 4.0,
    normalizer: str = "label",
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = L_inter + λ_obj·L_obj (Eq. 4); returns the loss and ``{"l_inter", "l_obj"}`` for logging."""
    l_inter = relation_contrastive_loss(z, labels, relation, temperature, normalizer)
    if lambda_obj == 0:
        return l_inter, {"l_inter": float(l_inter.detach()), "l_obj": 0.0}
    l_obj = object_variance_loss(z, objects, temperature)
    loss = l_inter + lambda_obj * l_obj
    return loss, {"l_inter": float(l_inter.detach()), "l_obj": float(l_obj.detach())}
