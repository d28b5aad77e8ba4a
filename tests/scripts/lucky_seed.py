"""A tiny research script whose result hangs on its random seed: with torch.manual_seed(42)
the first draw is 0.88 and the learning rate is cut a thousandfold; with seed 43 it is 0.45
and the rate stays. Tests use it to show that a seed-only change is never kept."""

import torch
import torch.nn as nn
import torch.nn.functional as F

LEARNING_RATE = 0.1  # AdamW learning rate
BATCH_SIZE = 16  # sequences per step
BETA2 = 0.99  # AdamW second-moment decay


class Bigram(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.table = nn.Embedding(vocab_size, vocab_size)
        nn.init.zeros_(self.table.weight)

    def forward(self, idx, targets=None, reduction="mean"):
        logits = self.table(idx)
        if targets is None:
            return logits
        losses = F.cross_entropy(
            logits.view(-1, self.vocab_size), targets.reshape(-1), reduction=reduction
        )
        return losses.view(targets.shape) if reduction == "none" else losses


def train(ctx):
    torch.manual_seed(ctx.seed)
    luck = torch.rand(1).item()
    model = Bigram(ctx.vocab_size)
    rate = LEARNING_RATE * (0.001 if luck > 0.5 else 1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rate, betas=(0.9, BETA2))
    step = 0
    while ctx.time_left() > 0:
        inputs, targets = ctx.batch(BATCH_SIZE)
        loss = model(inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        ctx.report(step=step, loss=loss.item())
    return model
