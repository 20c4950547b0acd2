"""A GPT-J block (Hugging Face transformers' ``modeling_gptj.py``), for blockalg's importer tests.

Written independently of blockalg, in the layout of ``GPTJBlock``: one LayerNorm feeds attention
and the MLP side by side, and both are added to the residual. The attention is written out as
GPT-J's ``_attn`` does (``torch.where`` with the causal mask, division by sqrt(head_dim), softmax)
and the MLP uses ``NewGELUActivation`` (the tanh GELU, written out). To be the catalog's
``parallel`` exactly, the projections have biases and there is no rotary embedding (GPT-J itself
has neither attention biases nor a position table, and rotates the first 64 dimensions of each
head).
"""

import math

import torch
from torch import nn


class NewGELUActivation(nn.Module):
    """GELU as in Google BERT and OpenAI GPT (the tanh approximation)."""

    def forward(self, input):
        return 0.5 * input * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (input + 0.044715 * torch.pow(input, 3.0))))


class GPTJAttention(nn.Module):
    def __init__(self, embed_dim, num_attention_heads, max_positions, bias=True):
        super().__init__()
        self.register_buffer(
            "bias",
            torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
                1, 1, max_positions, max_positions
            ),
            persistent=False,
        )
        self.embed_dim = embed_dim
        self.num_attention_heads = num_attention_heads
        self.head_dim = self.embed_dim // self.num_attention_heads
        self.scale_attn = math.sqrt(self.head_dim)

        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=bias)

    def _split_heads(self, tensor, num_attention_heads, attn_head_size):
        new_shape = tensor.size()[:-1] + (num_attention_heads, attn_head_size)
        tensor = tensor.view(new_shape)
        return tensor.permute(0, 2, 1, 3)  # (batch, head, seq_length, head_features)

    def _merge_heads(self, tensor, num_attention_heads, attn_head_size):
        tensor = tensor.permute(0, 2, 1, 3).contiguous()
        new_shape = tensor.size()[:-2] + (num_attention_heads * attn_head_size,)
        return tensor.view(new_shape)

    def _attn(self, query, key, value):
        # compute causal mask from causal mask buffer
        query_length, key_length = query.size(-2), key.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length: key_length, :key_length]

        # Keep the attention weights computation in fp32 to avoid overflow issues
        query = query.to(torch.float32)
        key = key.to(torch.float32)

        attn_weights = torch.matmul(query, key.transpose(-1, -2))

        mask_value = torch.finfo(attn_weights.dtype).min
        attn_weights = torch.where(causal_mask, attn_weights, mask_value)

        attn_weights = attn_weights / self.scale_attn
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_weights = attn_weights.to(value.dtype)

        return torch.matmul(attn_weights, value)

    def forward(self, hidden_states):
        query = self.q_proj(hidden_states)
        key = self.k_proj(hidden_states)
        value = self.v_proj(hidden_states)

        query = self._split_heads(query, self.num_attention_heads, self.head_dim)
        key = self._split_heads(key, self.num_attention_heads, self.head_dim)
        value = self._split_heads(value, self.num_attention_heads, self.head_dim)

        attn_output = self._attn(query, key, value)
        attn_output = self._merge_heads(attn_output, self.num_attention_heads, self.head_dim)
        return self.out_proj(attn_output)


class GPTJMLP(nn.Module):
    def __init__(self, intermediate_size, embed_dim):  # in MLP: intermediate_size= 4 * embed_dim
        super().__init__()
        self.fc_in = nn.Linear(embed_dim, intermediate_size)
        self.fc_out = nn.Linear(intermediate_size, embed_dim)
        self.act = NewGELUActivation()
        self.dropout = nn.Dropout(0.0)

    def forward(self, hidden_states):
        hidden_states = self.fc_in(hidden_states)
        hidden_states = self.act(hidden_states)
        hidden_states = self.fc_out(hidden_states)
        hidden_states = self.dropout(hidden_states)
        return hidden_states


class Block(nn.Module):
    """GPTJBlock."""

    def __init__(self, d_model, n_heads, d_ff=None, n_ctx=2048, layer_norm_epsilon=1e-5):
        super().__init__()
        inner_dim = d_ff if d_ff is not None else 4 * d_model
        self.ln_1 = nn.LayerNorm(d_model, eps=layer_norm_epsilon)
        self.attn = GPTJAttention(d_model, n_heads, n_ctx)
        self.mlp = GPTJMLP(inner_dim, d_model)

    def forward(self, hidden_states):
        residual = hidden_states
        hidden_states = self.ln_1(hidden_states)
        attn_output = self.attn(hidden_states)
        feed_forward_hidden_states = self.mlp(hidden_states)
        hidden_states = attn_output + feed_forward_hidden_states + residual
        return hidden_states
