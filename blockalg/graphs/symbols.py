"""Every dimension symbol blockalg uses, created once.

All dimensions are positive integers. Formulas in :mod:`blockalg.graphs.ops` are written in these symbols
and nothing else; the defaults ``d_head = d_model / n_heads``, ``n_kv_heads = n_heads`` and
``d_ff = 4 d_model`` are *relations applied by substitution* (see :func:`default_relations`), never
baked into a formula.

>>> from blockalg.graphs.symbols import d_model, n_heads, d_head
>>> (n_heads * d_head).subs(default_relations())
d_model
"""

import sympy as sp


def _dimension(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


d_model = _dimension("d_model")  # width of the residual stream
n_heads = _dimension("n_heads")  # query heads
d_head = _dimension("d_head")  # width of one head
n_kv_heads = _dimension("n_kv_heads")  # key/value heads (< n_heads: grouped-query attention)
d_ff = _dimension("d_ff")  # hidden width of the FFN
n_layers = _dimension("n_layers")  # L, the number of blocks
n_ctx = _dimension("n_ctx")  # context length: rows of the learned position table
seq_len = _dimension("seq_len")  # s, tokens in the analysed sequence (<= n_ctx)
batch = _dimension("batch")  # b, sequences per step (FLOPs are reported per sequence)
vocab = _dimension("vocab")  # V
n_experts = _dimension("n_experts")
top_k = _dimension("top_k")
#: The position of a decoded token (0-based): it attends to ``position + 1`` keys. Not a
#: dimension of the model, so not in :data:`DIMENSIONS`.
position = sp.Symbol("t", integer=True, nonnegative=True)

#: name -> symbol, in the order tables show them.
DIMENSIONS: dict[str, sp.Symbol] = {
    s.name: s
    for s in (d_model, n_heads, d_head, n_kv_heads, d_ff, n_layers, n_ctx, seq_len, batch, vocab,
              n_experts, top_k)
}

#: How each symbol prints in LaTeX (papers write L, s, V, d).
LATEX_NAMES: dict[sp.Symbol, str] = {
    d_model: "d", n_heads: "h", d_head: "d_{h}", n_kv_heads: "h_{kv}", d_ff: "d_{ff}",
    n_layers: "L", n_ctx: "n_{ctx}", seq_len: "s", batch: "b", vocab: "V", n_experts: "E",
    top_k: "k", position: "t",
}


def default_relations() -> dict[sp.Symbol, sp.Expr]:
    """The conventional relations between dimensions, as a substitution map.

    >>> sorted(str(k) for k in default_relations())
    ['d_ff', 'd_head', 'n_kv_heads']
    """
    return {d_head: d_model / n_heads, n_kv_heads: n_heads, d_ff: 4 * d_model}


def relations_holding_at(dims: dict[str, int]) -> dict[sp.Symbol, sp.Expr]:
    """The default relations that the concrete ``dims`` satisfy, so closed forms can use them.

    gpt2-small has d_ff = 3072 = 4·768, so its closed forms are written without ``d_ff``; a model
    with d_ff = 2048 at d_model = 768 keeps the symbol.

    >>> relations_holding_at({"d_model": 768, "n_heads": 12, "d_head": 64, "n_kv_heads": 12,
    ...                       "d_ff": 2048})
    {d_head: d_model/n_heads, n_kv_heads: n_heads}
    """
    values = {DIMENSIONS[k]: sp.Integer(v) for k, v in dims.items() if k in DIMENSIONS}
    holding = {}
    for symbol, relation in default_relations().items():
        if symbol in values and relation.xreplace(values) == values[symbol]:
            holding[symbol] = relation
    return holding
