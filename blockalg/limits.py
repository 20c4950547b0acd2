"""Every limit on input, in one place: checked before work starts, so no input can hang blockalg
or make it grow without bound. The README's "Limits" table lists them; a value over a limit is
a one-line :class:`~blockalg.errors.BlockalgError` (exit code 2).
"""

#: Bytes read from a graph file or a Hugging Face config (larger files are refused unread).
MAX_FILE_BYTES = 4 * 1024 * 1024
#: Nesting depth of JSON arrays and objects in those files.
MAX_JSON_DEPTH = 64
#: Digits of an integer in those files.
MAX_JSON_INT_DIGITS = 100

#: Characters, syntax nodes and nesting depth of one expression (an edge scale, a segment's layers).
MAX_EXPRESSION_CHARS = 200
MAX_EXPRESSION_NODES = 100
MAX_EXPRESSION_DEPTH = 24
#: Size bound of any value an expression can take: numerator and denominator together, in bits,
#: with every dimension at its maximum. Checked on the syntax tree before anything is computed,
#: so ``((2**64)**64)**64`` is refused at once, and every expression evaluates in microseconds
#: and fits a float.
MAX_EXPRESSION_BITS = 256

#: The largest dimension: what the device's int64 holds (torch indexes tensors with int64).
MAX_DIMENSION = 2**63 - 1
#: Nodes and edges of one block (a model of L blocks is never unrolled for the analyses).
MAX_BLOCK_NODES = 256
MAX_BLOCK_EDGES = 1024
#: Residual streams of a model (ResiDual has two), and segments of a stack (blocks of different kinds, one after the other).
MAX_STREAMS = 2
MAX_SEGMENTS = 32
#: Distinct monomials n^i a^j f^k of one block's path generating function.
MAX_PATH_TERMS = 5000
#: Polynomials above this degree are kept expanded instead of factored (factoring grows much
#: faster than the polynomial).
MAX_FACTOR_DEGREE = 16

#: Exact integers up to this many bits (about 20,000 digits); larger values (the path count of
#: a very deep model) are given as :class:`~blockalg.graphs.magnitude.Approx`: 30 significant
#: digits and the exact number of digits.
MAX_EXACT_BITS = 66_000
#: Layers for which distributions and per-layer rows are listed (one row per layer); a model of
#: two streams costs more per layer.
MAX_DETAIL_LAYERS = 1000
MAX_STREAM_DETAIL_LAYERS = 200
#: Blocks of a model built with torch (check, gradients, train): built one module at a time.
MAX_TORCH_LAYERS = 10_000
