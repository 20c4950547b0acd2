"""A nanoGPT block whose attention branch passes through a custom ``torch.autograd.Function``
(a gradient-scaling layer, as in gradient-reversal code): its forward is a view, its backward
scales. blockalg cannot read a custom backward, so importing it must fail, naming the node."""

import torch

from nanogpt_block import Block as NanoGPTBlock


class ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.scale, None


class Block(NanoGPTBlock):
    def forward(self, x):
        x = x + ScaleGradient.apply(self.attn(self.ln_1(x)), 0.5)
        x = x + self.mlp(self.ln_2(x))
        return x
