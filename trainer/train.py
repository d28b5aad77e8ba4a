"""The research script: a small modern GPT trained on bytes under a fixed wall-clock budget.

This is the file the agent edits. The harness calls train(ctx) and evaluates the model it
returns on held-out data; nothing printed here counts. `ctx` offers:

    ctx.device, ctx.seed, ctx.vocab_size, ctx.seq_len   where and what to train
    ctx.batch(batch_size) -> (inputs, targets)          training batches, int64, on the device
    ctx.progress(), ctx.time_left()                     the clock (fraction spent, seconds left)
    ctx.plan_steps(steps_done, seconds_per_step)        how many steps fit the budget (fixed per
                                                        script, so reruns are reproducible)
    ctx.report(step=..., loss=..., **metrics)           live metrics for the cockpit

The returned model must map model(idx) to logits (batch, time, ctx.vocab_size), must not
look ahead, and its forward must be traceable by torch.export (no Python branching on tensor
values): the harness exports it and scores the logits in a process of its own.
"""

import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CUDA = os.environ.get("COCKPIT_DEVICE") == "cuda"  # set by the harness: size for the device

# ---- Model ----------------------------------------------------------------------------
DEPTH = 8 if CUDA else 4  # transformer blocks
WIDTH = 768 if CUDA else 128  # model dimension
HEAD_DIM = 128 if CUDA else 32  # dimension of each attention head
MLP_RATIO = 4  # MLP hidden width as a multiple of WIDTH
LOGIT_SOFTCAP = 15.0  # logits are squashed into (-cap, cap)
ROPE_BASE = 10000.0  # rotary embedding base

# ---- Optimisation ---------------------------------------------------------------------
BATCH_SIZE = 64 if CUDA else 4  # sequences per step (each ctx.seq_len long)
LEARNING_RATE = 0.003  # peak AdamW learning rate for the transformer's matrices
EMBED_LR = 0.01  # learning rate of the embedding and the output head
WEIGHT_DECAY = 0.1  # decoupled weight decay on matrices
BETA1 = 0.9
BETA2 = 0.95
WARMUP_STEPS = 3  # steps spent ramping the learning rate up
WARMDOWN_FRACTION = 0.4  # share of the planned steps spent decaying it at the end
FINAL_LR_FRACTION = 0.0  # learning rate at the end, as a fraction of the peak
GRAD_CLIP = 1.0  # gradient norm clipping (0 turns it off)
UNTIMED_STEPS = 10  # first steps left out of the pace (allocation, compilation)
PLAN_AT = 0.2  # share of the budget after which the pace so far fixes the run's step count
REPORT_EVERY = 10 if CUDA else 1  # steps between live loss reports
COMPILE = CUDA  # torch.compile the model (worth it on a GPU, not for short CPU runs)


class RMSNorm(torch.autograd.Function):
    """x / rms(x), with a hand-written backward: far fewer passes over memory on the CPU
    than F.rms_norm's autograd graph (a norm and a multiply forward; a batched dot, a
    multiply and a multiply-add backward)."""

    @staticmethod
    def forward(ctx, x):
        rms = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * x.shape[-1] ** -0.5
        scale = (rms + 1e-6).reciprocal_()
        y = x * scale
        ctx.save_for_backward(y, scale)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, scale = ctx.saved_tensors
        # d/dx = scale * (grad - y * mean(grad * y)); the row dot products as one batched matmul.
        dot = (grad.unsqueeze(-2) @ y.unsqueeze(-1)).squeeze(-1)
        return torch.addcmul(grad * scale, y, dot.mul_(scale).mul_(-1.0 / y.shape[-1]))


rms_norm = RMSNorm.apply


def rotary_tables(seq_len, head_dim, base, device):
    """cos and signed sin of position x frequency for the two halves of a head, shaped
    (1, time, 1, head_dim), so that a rotation is one multiply and two multiply-adds."""
    frequencies = base ** (-torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device).float(), frequencies)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), -1)[None, :, None], torch.cat((-sin, sin), -1)[None, :, None]


def rotate(x, cos, sin):
    # Channel i pairs with channel i + head_dim / 2: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin),
    # written half by half into one output: two passes over memory.
    half = x.shape[-1] // 2
    out = torch.mul(x, cos)
    out[..., :half].addcmul_(x[..., half:], sin[..., :half])
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out.type_as(x)  # under bf16 autocast the fp32 tables promote; come back to bf16


class Rotary(torch.autograd.Function):
    """Rotary position embedding: channel pairs turned by an angle that grows with position.
    Its gradient is the same rotation backwards, so no activations need to be kept."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return rotate(grad, cos, -sin), None, None


class Attention(nn.Module):
    def __init__(self, width, head_dim):
        super().__init__()
        self.heads = width // head_dim
        self.head_dim = head_dim
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x, cos, sin):
        batch, length, width = x.shape
        # split, not slicing: its gradient is one concatenation, not a zeroed copy per slice.
        qk, v = self.qkv(x).split([2 * width, width], dim=-1)
        # Queries and keys are rotated together, as 2 x heads heads of one tensor.
        qk = qk.view(batch, length, 2 * self.heads, self.head_dim)
        q, k = Rotary.apply(qk, cos, sin).transpose(1, 2).split(self.heads, dim=1)
        v = v.view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class ReluSquared(torch.autograd.Function):
    """relu(x)**2 with a hand-written backward: one new tensor each way, the rest in place
    (the widest activations of the model: on the CPU, fresh memory costs more than a pass)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.relu(x).square_()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.relu(x).mul_(grad).mul_(2.0)


class MLP(nn.Module):
    def __init__(self, width, ratio):
        super().__init__()
        self.up = nn.Linear(width, ratio * width, bias=False)
        self.down = nn.Linear(ratio * width, width, bias=False)

    def forward(self, x):
        return self.down(ReluSquared.apply(self.up(x)))


class Block(nn.Module):
    def __init__(self, width, head_dim, mlp_ratio):
        super().__init__()
        self.attention = Attention(width, head_dim)
        self.mlp = MLP(width, mlp_ratio)

    def forward(self, x, cos, sin):
        x = x + self.attention(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, max_seq_len):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, WIDTH)
        head_dim = min(HEAD_DIM, WIDTH)  # a model narrower than a head has one head
        self.blocks = nn.ModuleList(Block(WIDTH, head_dim, MLP_RATIO) for _ in range(DEPTH))
        self.head = nn.Linear(WIDTH, vocab_size, bias=False)
        cos, sin = rotary_tables(max_seq_len, head_dim, ROPE_BASE, self.embed.weight.device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.head.weight, std=0.001)
        for block in self.blocks:
            for linear in (block.attention.qkv, block.mlp.up):
                bound = math.sqrt(3.0 / WIDTH)
                nn.init.uniform_(linear.weight, -bound, bound)
            # Residual branches start at zero: each block begins as the identity.
            nn.init.zeros_(block.attention.proj.weight)
            nn.init.zeros_(block.mlp.down.weight)

    def estimate_flops(self):
        """Training FLOPs per token: 6 per matrix weight, plus causal attention."""
        matrix_params = sum(
            p.numel() for name, p in self.named_parameters() if p.dim() == 2 and "embed" not in name
        )
        attention = 6 * DEPTH * WIDTH * self.cos.shape[1]  # 12 * L * d * T, halved for causality
        return 6 * matrix_params + attention

    def forward(self, idx, targets=None, reduction="mean"):
        length = idx.shape[1]
        x = rms_norm(self.embed(idx))
        cos, sin = self.cos[:, :length], self.sin[:, :length]
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.head(rms_norm(x)).float()
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        losses = F.cross_entropy(
            logits.view(-1, self.vocab_size), targets.reshape(-1), reduction=reduction
        )
        return losses.view(targets.shape) if reduction == "none" else losses


def learning_rate_scale(step, planned_steps):
    """Warm up, hold, then decay linearly to FINAL_LR_FRACTION over the last WARMDOWN_FRACTION."""
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    if planned_steps is None:
        return 1.0
    progress = step / planned_steps
    if progress < 1.0 - WARMDOWN_FRACTION:
        return 1.0
    remaining = max(0.0, 1.0 - progress) / WARMDOWN_FRACTION
    return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * remaining


def build_optimizer(model):
    matrices = [
        p for name, p in model.named_parameters() if p.dim() == 2 and name.startswith("blocks.")
    ]
    others = [
        p
        for name, p in model.named_parameters()
        if not (p.dim() == 2 and name.startswith("blocks."))
    ]
    groups = [
        {"params": matrices, "lr": LEARNING_RATE, "weight_decay": WEIGHT_DECAY},
        {"params": others, "lr": EMBED_LR, "weight_decay": 0.0},
    ]
    for group in groups:
        group["initial_lr"] = group["lr"]
    # The fused kernel (CUDA and CPU alike) updates each tensor in one pass: on two CPU cores
    # it is three times faster than the per-tensor loop.
    return torch.optim.AdamW(groups, betas=(BETA1, BETA2), eps=1e-10, fused=True)


def train(ctx):
    torch.manual_seed(ctx.seed)
    model = GPT(ctx.vocab_size, ctx.seq_len).to(ctx.device)
    optimizer = build_optimizer(model)
    step_model = torch.compile(model) if COMPILE else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device.type == "cuda")
    step, planned_steps, pace_started = 0, None, None
    while ctx.time_left() > 0 and (planned_steps is None or step < planned_steps):
        if step == UNTIMED_STEPS:
            pace_started = time.perf_counter()
        scale = learning_rate_scale(step, planned_steps)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale
        inputs, targets = ctx.batch(BATCH_SIZE)
        with autocast:
            loss = step_model(inputs, targets)
        loss.backward()
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if planned_steps is None and step >= UNTIMED_STEPS + 20 and ctx.progress() >= PLAN_AT:
            # The pace so far fixes how many steps the run takes in all. The schedule runs on
            # steps (and is flat until the warmdown), so reruns that differ only by their seed
            # do the same work, and a rerun with the same seed gives the same result.
            if CUDA:
                torch.cuda.synchronize()
            seconds_per_step = (time.perf_counter() - pace_started) / (step - UNTIMED_STEPS)
            planned_steps = ctx.plan_steps(step, seconds_per_step)
        if step % REPORT_EVERY == 0:
            ctx.report(step=step, loss=loss.item(), lr_scale=scale)
    return model
