"""Small models that tests export and evaluate."""

from __future__ import annotations

import torch
from torch import nn


class Tiny(nn.Module):
    """An embedding and a head: the smallest honest forward (idx -> logits over 256 bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 8)
        self.head = nn.Linear(8, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.embed(idx)))
