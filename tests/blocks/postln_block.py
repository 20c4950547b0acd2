"""A post-LN block as OpenAI's GPT-1 writes it (Hugging Face transformers' ``modeling_openai.py``,
after ``finetune-transformer-lm``), for blockalg's importer tests.

Written independently of blockalg: ``Conv1D`` (a linear map with its weight stored transposed),
attention written out with the ``w * b + -1e4 * (1 - b)`` causal mask, and LayerNorm after each
residual add: ``n = ln_1(x + attn(x))``, ``h = ln_2(n + mlp(n))``. GPT-1's ``afn`` is the tanh
GELU, as here (and as the catalog's ``post-ln``); the hidden width is ``4 * n_embd``.
"""

import math

import torch
from torch import nn


def gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


class Conv1D(nn.Module):
    """Basically works like a linear layer but the weights are transposed."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        x = x.view(size_out)
        return x


class Attention(nn.Module):
    def __init__(self, nx, n_positions, n_head, scale=True):
        super().__init__()
        n_state = nx  # in Attention: n_state=768 (nx=n_embd)
        if n_state % n_head != 0:
            raise ValueError(f"Attention n_state shape: {n_state} must be divisible by n_head {n_head}")
        self.register_buffer(
            "bias",
            torch.tril(torch.ones(n_positions, n_positions)).view(1, 1, n_positions, n_positions),
            persistent=False,
        )
        self.n_head = n_head
        self.split_size = n_state
        self.scale = scale
        self.c_attn = Conv1D(n_state * 3, nx)
        self.c_proj = Conv1D(n_state, nx)
        self.attn_dropout = nn.Dropout(0.0)
        self.resid_dropout = nn.Dropout(0.0)

    def _attn(self, q, k, v):
        w = torch.matmul(q, k)
        if self.scale:
            w = w / math.sqrt(v.size(-1))
        b = self.bias[:, :, : w.size(-2), : w.size(-1)]
        w = w * b + -1e4 * (1 - b)

        w = nn.functional.softmax(w, dim=-1)
        w = self.attn_dropout(w)
        return torch.matmul(w, v)

    def merge_heads(self, x):
        x = x.permute(0, 2, 1, 3).contiguous()
        new_x_shape = x.size()[:-2] + (x.size(-2) * x.size(-1),)
        return x.view(*new_x_shape)

    def split_heads(self, x, k=False):
        new_x_shape = x.size()[:-1] + (self.n_head, x.size(-1) // self.n_head)
        x = x.view(*new_x_shape)
        if k:
            return x.permute(0, 2, 3, 1)
        else:
            return x.permute(0, 2, 1, 3)

    def forward(self, x):
        x = self.c_attn(x)
        query, key, value = x.split(self.split_size, dim=2)
        query = self.split_heads(query)
        key = self.split_heads(key, k=True)
        value = self.split_heads(value)

        a = self._attn(query, key, value)
        a = self.merge_heads(a)
        a = self.c_proj(a)
        a = self.resid_dropout(a)
        return a


class MLP(nn.Module):
    def __init__(self, n_state, nx):  # in MLP: n_state=3072 (4 * n_embd)
        super().__init__()
        self.c_fc = Conv1D(n_state, nx)
        self.c_proj = Conv1D(nx, n_state)
        self.act = gelu
        self.dropout = nn.Dropout(0.0)

    def forward(self, x):
        h = self.act(self.c_fc(x))
        h2 = self.c_proj(h)
        return self.dropout(h2)


class Block(nn.Module):
    def __init__(self, d_model, n_heads, n_ctx=512, layer_norm_epsilon=1e-5):
        super().__init__()
        nx = d_model
        self.attn = Attention(nx, n_ctx, n_heads)
        self.ln_1 = nn.LayerNorm(nx, eps=layer_norm_epsilon)
        self.mlp = MLP(4 * nx, nx)
        self.ln_2 = nn.LayerNorm(nx, eps=layer_norm_epsilon)

    def forward(self, x):
        a = self.attn(x)
        n = self.ln_1(x + a)
        m = self.mlp(n)
        h = self.ln_2(n + m)
        return h
