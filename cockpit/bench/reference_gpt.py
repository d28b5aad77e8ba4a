"""A plain PyTorch GPT, for comparison: the speed the default research script must match.

Sized like the script named by COCKPIT_BENCH_TEMPLATE (its DEPTH, WIDTH, HEAD_DIM, MLP_RATIO,
BATCH_SIZE and LEARNING_RATE) and built the textbook way: learned positions, LayerNorm, GELU,
a fused QKV projection with biases, the same scaled_dot_product_attention, AdamW, a fixed
number of seconds. It is a training script like any other, run by the same harness.
"""

import importlib.util
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


def _template():
    spec = importlib.util.spec_from_file_location(
        "bench_template", os.environ["COCKPIT_BENCH_TEMPLATE"]
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


T = _template()


class Block(nn.Module):
    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.up = nn.Linear(width, mlp_ratio * width)
        self.down = nn.Linear(mlp_ratio * width, width)

    def forward(self, x):
        batch, time, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(width, dim=2)
        q, k, v = (
            t.view(batch, time, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(batch, time, width))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab_size, seq_len):
        super().__init__()
        self.vocab_size = vocab_size
        self.tokens = nn.Embedding(vocab_size, T.WIDTH)
        self.positions = nn.Embedding(seq_len, T.WIDTH)
        self.blocks = nn.ModuleList(
            Block(T.WIDTH, T.WIDTH // T.HEAD_DIM, T.MLP_RATIO) for _ in range(T.DEPTH)
        )
        self.ln = nn.LayerNorm(T.WIDTH)
        self.head = nn.Linear(T.WIDTH, vocab_size, bias=False)

    def forward(self, idx, targets=None, reduction="mean"):
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tokens(idx) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x)).float()
        if targets is None:
            return logits
        losses = F.cross_entropy(
            logits.view(-1, self.vocab_size), targets.reshape(-1), reduction=reduction
        )
        return losses.view(targets.shape) if reduction == "none" else losses


def train(ctx):
    torch.manual_seed(ctx.seed)
    model = PlainGPT(ctx.vocab_size, ctx.seq_len).to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=T.LEARNING_RATE, betas=(0.9, 0.95))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device.type == "cuda")
    step_model = torch.compile(model) if T.COMPILE else model
    step = 0
    while ctx.time_left() > 0:
        inputs, targets = ctx.batch(T.BATCH_SIZE)
        with autocast:
            loss = step_model(inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % T.REPORT_EVERY == 0:
            ctx.report(step=step, loss=loss.item())
    return model
