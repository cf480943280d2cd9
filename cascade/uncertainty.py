"""How much the members of an ensemble disagree: a voxel map and one number per case.

Every window the segmenter predicts is predicted by several members: the checkpoints of an
ensemble (the folds of cross-validation) times the mirrorings of test-time augmentation. Each
member votes for one label per voxel (its own argmax, with the classes the weights do not label
merged into background, as the bundle's postprocessing merges them). From the shares of the votes:

- the **disagreement map** ``u(v) = 1 - max_k share_k(v)``: the share of the members that vote
  against the majority label of voxel ``v``; 0 where all agree, at most ``1 - 1/K`` for K labels.
  It lives on the input grid (``--save_uncertainty``) and is 0 outside the gate of stage 2.
- the **case uncertainty** ``U = sum_v u(v) * voxel volume / labelled volume``: the volume the
  members dispute (each voxel weighted by the share against the majority) relative to the volume
  the cascade labels, so that small and large atria compare. For members that differ only by a
  boundary shift of ``d`` mm over a structure of surface ``S`` and volume ``V``, ``U`` is of the order
  of ``d * S / (2 V)``, about ``1 - Dice`` between one member and the consensus.

The numbers measure the spread of the members, not the error against a manual label: a case all
members get wrong in the same way has a low ``U``. How well ``U`` ranks real errors is measured on
the 80 la2018 scans (docs/uncertainty.md); it is not a calibrated error estimate.

MONAI offers no ensemble-disagreement measure over the members of a sliding-window ensemble
(its ``VoteEnsemble`` and ``MeanEnsemble`` combine whole predictions), hence this module.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

__all__ = [
    "vote_groups", "label_votes", "add_votes", "disagreement", "case_uncertainty", "needs_review",
    "UNCERTAINTY_UNAVAILABLE",
]

# the report's cell where one member predicted (no ensemble, no TTA): no spread to measure
UNCERTAINTY_UNAVAILABLE = "n/a"


def vote_groups(channels: int, labelled: Collection[int] | None = None) -> list[int]:
    """The labels a member can vote for: background (with every class the weights do not label merged
    into it) and each labelled class, as label values in channel order, e.g. ``[0, 3]`` for la2018."""
    return [0] + [k for k in range(1, channels) if labelled is None or k in labelled]


def label_votes(logits: torch.Tensor, labelled: Collection[int] | None = None) -> torch.Tensor:
    """One member's vote: the index in :func:`vote_groups` of its argmax label per voxel.

    Args:
        logits: (B, K, X, Y, Z) logits of one member.
        labelled: foreground label values the weights label (default: all); the others are merged
            into background first (their probabilities added to it, i.e. a log-sum-exp of logits),
            so a member votes as the bundle's ``MergeIntoBackgroundd`` + argmax would label (ties to
            the first, as argmax).

    Returns:
        (B, X, Y, Z) uint8 group indices. Computed plane by plane (element-wise operations on the
        contiguous channel planes), an order of magnitude faster on the CPU than an argmax over
        the channel axis.
    """
    groups = vote_groups(logits.shape[1], labelled)
    best = logits[:, 0]
    for k in range(1, logits.shape[1]):
        if k not in groups:
            best = torch.logaddexp(best, logits[:, k])
    winner = torch.zeros(best.shape, dtype=torch.uint8, device=logits.device)
    for index, k in enumerate(groups[1:], 1):
        winner.masked_fill_(logits[:, k] > best, index)
        best = torch.maximum(best, logits[:, k])
    return winner


def add_votes(ballots: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
    """Count one member's :func:`label_votes` into ``ballots``, in place.

    Args:
        ballots: (B, G - 1, X, Y, Z) votes for each foreground group (background's follow: every
            member votes once).
        votes: (B, X, Y, Z) group indices.
    """
    for index in range(ballots.shape[1]):
        ballots[:, index] += votes == index + 1
    return ballots


def disagreement(foreground_shares: torch.Tensor) -> torch.Tensor:
    """The share of members against the majority label, per voxel.

    Args:
        foreground_shares: (B, G - 1, X, Y, Z) shares of the votes for each foreground group (the
            members' mean :func:`add_votes`, after blending); background's share is the rest.

    Returns:
        (B, 1, X, Y, Z) ``1 - max_k shares``, clipped to [0, 1].
    """
    background = 1.0 - foreground_shares.sum(dim=1, keepdim=True)
    majority = torch.maximum(background, foreground_shares.amax(dim=1, keepdim=True))
    return (1.0 - majority).clamp_(0.0, 1.0)


def case_uncertainty(disputed_mm3: float, labelled_mm3: float) -> float | None:
    """The case uncertainty ``U`` of the module docstring.

    Args:
        disputed_mm3: the integral of a case's :func:`disagreement` map, in mm^3 (its sum times the
            voxel volume of its grid).
        labelled_mm3: the volume the cascade labels (every foreground class, on the output grid).

    Returns:
        ``U`` (>= 0), or ``None`` when nothing is labelled (no structure to relate the dispute to).
    """
    return disputed_mm3 / labelled_mm3 if labelled_mm3 > 0 else None


def needs_review(uncertainty: float | None, threshold: float, warnings: Sequence[str]) -> bool:
    """The review rule: a case is flagged when its uncertainty exceeds ``threshold`` (the segmenter's
    ``review_uncertainty``), when it has a QC warning (an implausible volume, an input repaired, a grid
    too coarse, an empty label map), or when nothing was labelled."""
    return bool(warnings) or uncertainty is None or uncertainty > threshold
