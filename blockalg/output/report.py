"""Report folders: Markdown, LaTeX (booktabs), CSV, JSON and figures, written all at once.

A :class:`ReportFolder` collects files in memory and :meth:`~ReportFolder.write` puts them in place
through a staging folder beside the target and one atomic exchange (Linux ``renameat2``; elsewhere
two renames with SIGINT/SIGTERM held back between them), so an interrupted run leaves the complete
old folder or the complete new one, never half a report or none.
Text files are reproducible byte for byte; :meth:`~ReportFolder.differences` lists those that
differ from a folder on disk (the ``--check`` of CI). Figures are written but not compared
(their bytes depend on the matplotlib and font versions).

:func:`variant_report` is what ``blockalg report`` writes; the studies in ``analyses/`` build
their own folders with the same pieces.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import signal
import sys
import tempfile
from functools import partial
from pathlib import Path

from ..errors import BlockalgError, Terminated, quote, sigterm_raises
from ..files import check_writable, current_umask, os_error
from .render import Table, graph_to_mermaid, json_text, latex_escape
from .tables import (
    EXPERT_DIMS,
    closed_form_table,
    comparison_table,
    dims_line,
    gradient_tables,
    label_part,
    uses_experts,
    written,
)

TEXT_SUFFIXES = {".md", ".tex", ".csv", ".json", ".txt", ".mmd"}
MARKER = ".blockalg-report"  # marks a folder blockalg wrote, so rewriting it may replace it
FIGURE_FORMATS = ("png", "svg")


def replaceable(out) -> Path:
    """The folder a report for ``out`` is written to, checked before any work is done (commands
    call it first): a folder blockalg wrote, or a new or empty one (a report replaces its folder
    as a whole); through a symbolic link only to such a folder; in a place that can be written.
    A one-line error naming the problem otherwise."""
    out = _target(Path(out))
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise BlockalgError(f"{quote(str(out))}: exists and was not written by blockalg; choose a "
                            f"new or empty folder")
    return check_writable(out, _debris(out, "new"))


class ReportFolder:
    """The files of one report, relative path → bytes.

    ``thousands`` separates digit groups in the LaTeX tables (a thin space by default). With
    ``draw=False`` figures are not rendered (a drift check compares text files only): a figure may
    be passed as a function making it, so it is not even built then.
    """

    def __init__(self, thousands: str = r"\,", draw: bool = True):
        self.files: dict[str, bytes] = {}
        self.thousands = thousands
        self.draw = draw

    def add_text(self, name: str, text: str) -> str:
        self.files[name] = (text.rstrip("\n") + "\n").encode("utf-8")
        return name

    def add_json(self, name: str, data) -> str:
        return self.add_text(name, json_text(data))

    def add_table(self, stem: str, table: Table) -> str:
        """``stem.md``, ``stem.tex`` (a captioned, labelled ``table`` float) and ``stem.csv``;
        returns the Markdown text for embedding. CSV cells hold plain integers (no separators) so a
        spreadsheet reads numbers."""
        markdown = table.to_markdown()
        self.add_text(f"{stem}.md", f"**{table.title}**\n\n{markdown}")
        self.add_text(f"{stem}.tex", table.to_latex(self.thousands))
        self.add_text(f"{stem}.csv", table.to_csv())
        return markdown

    def add_figure(self, stem: str, fig) -> str:
        """``stem.png`` and ``stem.svg`` of ``fig`` (a Figure, or a function returning one);
        returns the PNG's path for embedding."""
        from .plots import figure_bytes, pyplot

        if not self.draw:
            if not callable(fig):
                pyplot().close(fig)
            return f"{stem}.png"
        fig = fig() if callable(fig) else fig
        for fmt in FIGURE_FORMATS:
            self.files[f"{stem}.{fmt}"] = figure_bytes(fig, fmt)
        pyplot().close(fig)
        return f"{stem}.png"

    def write(self, out) -> Path:
        """Replace the folder ``out`` with these files in one step, and return its path.

        The files are written into a staging folder beside ``out``, which then takes ``out``'s
        place (see :func:`replace_folder`): at every moment ``out`` is the complete old folder
        or the complete new one. A folder that blockalg did not write is never replaced; a
        symbolic link is followed only to a blockalg report folder.
        """
        out = replaceable(out)
        with sigterm_raises():
            try:
                _recover(out)
                staging = _stage(out)
                try:
                    _write_files(staging, {MARKER: MARKER_TEXT.encode(), **self.files})
                    replace_folder(staging, out)
                finally:
                    _remove(staging)
            except OSError as e:
                raise os_error(out, e) from None
        return out

    def text_files(self) -> list[str]:
        """The files a drift check compares (text: Markdown, LaTeX, CSV, JSON...)."""
        return [n for n in self.files if Path(n).suffix in TEXT_SUFFIXES]

    def differences(self, out) -> list[str]:
        """Text files that are missing in ``out``, differ from it, or are extra there."""
        out = Path(out)
        texts = {n: self.files[n] for n in self.text_files()}
        differ = [n for n, d in texts.items() if not (out / n).is_file() or (out / n).read_bytes() != d]
        on_disk = {str(p.relative_to(out)) for p in out.rglob("*")
                   if p.is_file() and p.suffix in TEXT_SUFFIXES} if out.is_dir() else set()
        return sorted(differ + [n for n in on_disk - set(texts)])


MARKER_TEXT = "written by blockalg; the whole folder is replaced on rewrite\n"


def _debris(out: Path, kind: str) -> str:
    """The prefix of ``out``'s staging (``new``) and retired (``old``) folders: hidden, beside it,
    short enough for any name (a long name is cut and told apart by a hash)."""
    name = out.name if len(out.name) <= 64 else \
        f"{out.name[:64]}-{hashlib.sha1(out.name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    return f".{name}.{kind}-"


def _target(out: Path) -> Path:
    """``out``, or the report folder a symbolic link ``out`` points to; any other link is refused
    (a dangling one would create its target, one to a file or folder elsewhere replace it)."""
    if not out.is_symlink():
        return out
    target = Path(os.path.realpath(out))
    if target.is_dir() and (target / MARKER).is_file():
        return target
    raise BlockalgError(f"{quote(str(out))}: a symbolic link to {quote(str(target))}, which is not "
                        f"a blockalg report folder; give the folder itself")


def _stage(out: Path) -> Path:
    """A new, empty staging folder beside ``out``, with the permissions of a plain folder."""
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=_debris(out, "new")))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private; a report is not
    return staging


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _remove(folder: Path) -> None:
    """Remove ``folder`` if it is there (a staging folder, or the old report after a swap)."""
    if os.path.lexists(folder):
        shutil.rmtree(folder, ignore_errors=True)


def _rename(source: Path, destination: Path) -> None:
    os.rename(source, destination)


RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one atomic step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``); False where the system or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc before 2.28, or another C library
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(staging: Path, out: Path) -> None:
    """Put the folder ``staging`` in ``out``'s place; afterwards ``staging`` holds the old folder
    (or nothing), for the caller to remove.

    One atomic exchange where the system has one; else two renames (``out`` aside to a hidden
    ``.out.old-*``, ``staging`` in), with SIGINT and SIGTERM held back between them. A run killed
    outright between the two (SIGKILL, power loss) leaves the old folder as ``.out.old-*``,
    which the next write puts back (:func:`_recover`).
    """
    if not os.path.lexists(out):
        _rename(staging, out)
        return
    if _exchange(staging, out):
        return
    retired = Path(tempfile.mkdtemp(dir=out.parent, prefix=_debris(out, "old")))
    os.rmdir(retired)  # a unique name; the old folder moves there
    with _signals_held():
        _rename(out, retired)
        try:
            _rename(staging, out)
        except BaseException:
            _rename(retired, out)
            raise
        _rename(retired, staging)


def _recover(out: Path) -> None:
    """Clean up after a run that was killed while writing ``out``: if ``out`` is missing and a
    retired copy of it is left, put it back; then remove every staging and retired folder."""
    if not out.parent.is_dir():
        return
    leftovers = sorted((p for p in out.parent.iterdir()
                        if p.name.startswith((_debris(out, "new"), _debris(out, "old")))),
                       key=lambda p: p.lstat().st_mtime)
    retired = [p for p in leftovers if p.name.startswith(_debris(out, "old"))
               and (p / MARKER).is_file()]
    if not os.path.lexists(out) and retired:
        _rename(retired[-1], out)
    for path in leftovers:
        _remove(path)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM are held back inside the block and acted on at its end (as
    KeyboardInterrupt or :class:`~blockalg.errors.Terminated`)."""
    received = []
    try:
        previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are handled there, not here
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            raise Terminated(received[0]) if received[0] != signal.SIGINT else KeyboardInterrupt()


def latex_math(expr) -> str:
    """A sympy expression as inline LaTeX with the papers' symbol names (L, d, s, V...)."""
    return written(expr, "latex")


# ---------------------------------------------------------------------------------------------
# The folder of `blockalg report`.

#: What each dimension symbol means, for the conventions paragraph (symbol as the tables write it).
SYMBOL_MEANINGS = {
    "d_model": "width of the residual stream", "n_heads": "attention heads",
    "d_head": "width of a head (d/h by default)", "n_kv_heads": "key/value heads (h by default)",
    "d_ff": "hidden width of the FFN (4d by default)", "n_layers": "number of blocks",
    "n_ctx": "rows of the position table (the longest sequence)",
    "seq_len": "tokens per sequence analysed (s ≤ n_ctx)", "batch": "sequences per batch",
    "vocab": "vocabulary size", "n_experts": "experts per MoE layer",
    "top_k": "experts active per token"}


def conventions_latex(experts: bool) -> str:
    """The paragraph defining every symbol and convention the report's tables use."""
    from ..graphs.symbols import DIMENSIONS, LATEX_NAMES

    symbols = [f"${LATEX_NAMES[DIMENSIONS[name]]}$ = {latex_escape(name)} "
               f"({latex_escape(meaning)})" for name, meaning in SYMBOL_MEANINGS.items()
               if experts or name not in EXPERT_DIMS]
    return "\n".join([
        r"\paragraph{Symbols.} " + "; ".join(symbols) + ". Every dimension is a positive integer.",
        r"\paragraph{Parameters} are whole-model counts, exact integers: components attention, "
        r"FFN, norm (every norm, the final one included), scale (learned scales) and embedding "
        r"(token and position tables; a tied unembedding has no parameters of its own).",
        r"\paragraph{FLOPs} count one multiply-add as 2 FLOPs, for one sequence of $s$ tokens at "
        r"batch 1, unembedding included. Matmul FLOPs are what PyTorch's \texttt{FlopCounterMode} "
        r"counts, with attention scores at the dense $s \times s$ cost; ``causal'' counts only "
        r"the $s(s+1)/2$ unmasked scores; backward matmul FLOPs are $2\times$ the forward ones. "
        r"Other FLOPs are the elementwise work (norms, softmax, activations, residual adds).",
        r"\paragraph{Gradient paths} run through the unrolled model from the embedding output to "
        r"the unembedding input; $n$, $a$, $f$ count the norms, attention and FFN sublayers a path "
        r"crosses, and $T(n, a, f)$, the block's path generating function, sums "
        r"$n^{\#\mathrm{norms}} a^{\#\mathrm{attention}} f^{\#\mathrm{FFN}}$ over its paths. "
        r"``Shortest'' and ``longest'' minimise and maximise each count separately; means are "
        r"over all paths, each counted once."])


def quantity_name(key: str) -> str:
    """A quantity's name in words, for the closed-forms table: ``params.norm`` → ``norm
    parameters``."""
    return QUANTITY_NAMES.get(key, key)


QUANTITY_NAMES = {
    "params.total": "parameters, whole model", "params.active": "parameters active per token",
    "params.per_block": "parameters per block", "params.attention": "attention parameters",
    "params.ffn": "FFN parameters", "params.norm": "norm parameters",
    "params.scale": "learned-scale parameters", "params.embedding": "embedding parameters",
    "flops.forward_matmul": "forward matmul FLOPs", "flops.backward_matmul": "backward matmul FLOPs",
    "flops.forward_other": "forward other FLOPs",
    "flops.forward_matmul_causal": "forward matmul FLOPs, causal",
    "paths.count": "number of gradient paths", "paths.shortest.norms": "norms, shortest path",
    "paths.shortest.sublayers": "sublayers, shortest path", "paths.longest.norms": "norms, longest path",
    "paths.longest.sublayers": "sublayers, longest path",
    "paths.mean_sublayers": "sublayers, mean over paths", "paths.mean_norms": "norms, mean over paths"}


def closed_forms_latex(analyses, keys) -> str:
    """One captioned, labelled table per variant: each quantity named, with its closed form."""
    parts = []
    for a in analyses:
        table = Table(f"closed forms of {a.name}", ["quantity", "key", "closed form"],
                      [[quantity_name(k), k, latex_math(a.closed_form(k))] for k in keys],
                      align="lll", label=f"tab:closed-forms-{label_part(a.name)}",
                      caption=f"Closed forms of {a.name}, with L symbolic; the relations d_ff = 4d, "
                              f"d_head = d/h and n_kv_heads = h are applied where they hold at "
                              f"preset {a.preset}.")
        parts.append(table.to_latex())
    return "\n\n".join(parts)


def variant_report(graphs, shapes, *, empirical: bool = False, thousands: str = r"\,",
                   measured: list[dict] | None = None, draw: bool = True) -> ReportFolder:
    """Everything blockalg says about ``graphs``, at each shape of ``shapes`` (label → dims, or
    preset names): ``README.md``, ``report.tex`` (a document: title, conventions, a section per
    preset with captioned tables and figures, closed forms, block graphs), tables, figures,
    ``closed_forms.tex`` and ``data.json``.

    ``empirical`` adds gradient norms measured at initialisation, or reuses ``measured`` (the
    ``data.json`` entries of an earlier run) without measuring again. ``draw=False`` renders no
    figures (for a drift check).
    """
    from ..analysis.analyze import analyze, quantity_keys
    from ..graphs.presets import resolve_dims
    from . import plots

    folder = ReportFolder(thousands, draw=draw)
    names = [g.graph["name"] for g in graphs]
    experts = uses_experts(graphs)
    md = [f"# blockalg report: {', '.join(names)}", "",
          "Exact counts from the block graphs (blockalg). Parameters are whole-model figures; FLOPs "
          "are for one sequence of seq_len tokens at batch 1, unembedding included, attention at "
          "the dense s×s cost (see the README's conventions).", ""]
    tex = [r"\section{Conventions}", conventions_latex(experts), ""]
    data = {"variants": names, "presets": {}}
    shapes = shapes if isinstance(shapes, dict) else {p: resolve_dims(p) for p in shapes}
    for preset, dims in shapes.items():
        analyses = [analyze(g, preset=preset, dims=dims) for g in graphs]
        data["presets"][preset] = {"dims": dims, "variants": [a.to_dict() for a in analyses]}
        shape = dims_line(dims, graphs).replace("=", " = ")
        md += [f"## {preset}", "", shape, ""]
        tex += [f"\\section{{Preset {latex_escape(preset)}}}",
                f"Dimensions: {dims_latex(dims, graphs)}.", ""]
        table = comparison_table(analyses, quantity_keys())
        md += [folder.add_table(f"tables/{preset}/compare", table), ""]
        tex += [f"\\input{{tables/{preset}/compare.tex}}", ""]
        layers = dims["n_layers"]
        detail = min(a.paths.detail_layers for a in analyses)  # a row per layer: not past it
        figures = [
            ("params", "parameters per component", partial(plots.params_by_component, analyses),
             f"Parameters per component at preset {preset} (log scale), one bar per variant, "
             f"labelled with its count."),
            ("flops_per_token", "FLOPs per token",
             partial(plots.flops_per_token, {a.name: flop_curve(a) for a in analyses}, preset),
             f"Forward FLOPs per token against the sequence length s, up to n_ctx = "
             f"{dims['n_ctx']}, at preset {preset}: all forward FLOPs (left) and the matmul "
             f"FLOPs alone (right). Attention adds a term linear in s."),
            ("paths", "gradient paths",
             partial(plots.path_distribution, {a.name: a.paths for a in analyses}, layers),
             f"Gradient paths at L = {layers}: the share of paths by sublayers crossed (left) and "
             f"the norms on the shortest path from the output back to each layer (right).")
        ][:None if layers <= detail else -1]
        if layers > detail:
            md += [f"(The figure of path distributions is drawn up to {detail:,} layers.)", ""]
        for stem, alt, make, caption in figures:
            png = folder.add_figure(f"figures/{preset}/{stem}", make)
            md += [f"![{alt}]({png})", ""]
            tex += [figure_latex(png, caption, f"fig:{label_part(preset)}-{stem}")]
        tex += [r"\clearpage", ""]
    closed = closed_form_table(analyses, quantity_keys(), "latex")
    md += ["## Closed forms", "", "Defaults applied where the last preset satisfies them "
           "(d_ff = 4d, d_head = d/h).", "", folder.add_table("tables/closed_forms", closed), ""]
    folder.add_text("closed_forms.tex", closed_forms_latex(analyses, quantity_keys()))
    tex += [r"\section{Closed forms}", "Each quantity as a function of the dimensions, with the "
            "number of layers $L$ symbolic (symbols as in the conventions).", "",
            r"\input{closed_forms.tex}", r"\clearpage", ""]
    if empirical:
        md_part, tex_part, data["gradients"] = _gradient_section(folder, graphs, measured)
        md += md_part
        tex += tex_part
    md += ["## Block graphs", ""]
    tex += [r"\section{Block graphs}", "Each block drawn from its graph: solid arrows join "
            "consecutive sublayers, dashed arrows are the residual connections, and an edge "
            "scale is written on its edge.", ""]
    drawings = []
    for g in graphs:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", g.graph["name"]).strip(".") or "block"
        folder.add_text(f"graphs/{name}.mmd", graph_to_mermaid(g))
        png = folder.add_figure(f"figures/graph_{name}", partial(plots.block_drawing, g))
        equations = "; ".join(g.graph.get("equations", []))
        md += [f"### {name}", "", equations, "", "```mermaid", graph_to_mermaid(g), "```", "",
               f"![{name}]({png})", ""]
        drawings.append((png, f"The block of {g.graph['name']}: {equations or 'a graph file'}.",
                         f"fig:graph-{label_part(name)}"))
    for i in range(0, len(drawings), 2):  # two drawings side by side
        tex += [figures_side_by_side(drawings[i:i + 2])]
    folder.add_json("data.json", data)
    folder.add_text("README.md", "\n".join(md))
    folder.add_text("report.tex", latex_document(f"blockalg report: {', '.join(names)}", tex))
    return folder


def _gradient_section(folder, graphs, measured):
    """The measured gradients at init (or the ``measured`` ones of an earlier run): Markdown,
    LaTeX and the data.json entries."""
    from ..graphs.presets import resolve_dims
    from ..model.gradients import DEFAULT_PRESET, GradientNorms, gradient_norms
    from . import plots

    if measured is None:
        results = [gradient_norms(g) for g in graphs]
        measured = [r.to_dict() for r in results]
    else:
        results = [GradientNorms.from_dict(entry, resolve_dims(DEFAULT_PRESET)) for entry in measured]
    png = folder.add_figure("figures/gradients", partial(plots.gradient_norms, results))
    first = results[0]
    setting = (f"d_model {first.dims['d_model']}, {first.dims['n_layers']} layers, init std "
               f"{first.init_std:g}, {len(first.seeds)} seeds")
    tables = list(gradient_tables(results, first.dims["n_layers"], setting))
    caption = (f"Gradients at initialisation, measured on the built models (d_model "
               f"{first.dims['d_model']}, {first.dims['n_layers']} layers, {len(first.seeds)} "
               f"seeds). Left: the norm of the gradient of each layer's FFN output matrix. Right: "
               f"the gradient at each block's input times the RMS of that input, relative to the "
               f"last layer: block 1's input is the raw embedding, whose small scale a following "
               f"norm divides by, so the unscaled gradient there is larger without any vanishing "
               f"further on.")
    md = ["## Gradient norms at initialisation (measured)", "", f"![gradient norms]({png})", ""]
    tex = [r"\section{Gradient norms at initialisation (measured)}",
           figure_latex(png, caption, "fig:gradients")]
    for stem, table in zip(("weights", "residual"), tables):
        md += [folder.add_table(f"tables/gradients_{stem}", table), ""]
        tex += [f"\\input{{tables/gradients_{stem}.tex}}"]
    return md, tex + [r"\clearpage", ""], measured


def dims_latex(dims, graphs) -> str:
    """``$d$ = 768, $h$ = 12, ...``: the dimensions in the report's symbols."""
    from ..graphs.symbols import DIMENSIONS, LATEX_NAMES

    hidden = () if uses_experts(graphs) else EXPERT_DIMS
    return ", ".join(f"${LATEX_NAMES[DIMENSIONS[k]]} = {v:,}$".replace(",", r"\,")
                     for k, v in dims.items() if k not in hidden and k in DIMENSIONS)


def figure_latex(png: str, caption: str, label: str) -> str:
    """A ``figure`` float including ``png`` (graphicx) at the text's width, captioned and
    labelled."""
    return "\n".join([r"\begin{figure}[htbp]", r"\centering",
                      f"\\includegraphics[width=\\linewidth]{{{png}}}",
                      f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
                      r"\end{figure}", ""])


def figures_side_by_side(figures) -> str:
    """One ``figure`` float holding ``figures`` ((png, caption, label), at most two) side by
    side, each in a minipage with its own caption and label."""
    parts = []
    for png, caption, label in figures:
        parts.append("\n".join([
            r"\begin{minipage}[t]{0.48\linewidth}", r"\centering",
            r"\includegraphics[width=\linewidth,height=0.55\textheight,keepaspectratio]"
            f"{{{png}}}", f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
            r"\end{minipage}"]))
    return "\n".join([r"\begin{figure}[htbp]", r"\centering", "\\hfill\n".join(parts),
                      r"\end{figure}", ""])


def flop_curve(analysis, seq_lens=None):
    """Forward FLOPs per token at each sequence length (default: powers of two up to the
    preset's n_ctx): (lengths, matmul, matmul + other)."""
    from ..graphs.expr import evaluate
    from .plots import seq_lengths

    seq_lens = seq_lens or seq_lengths(analysis.dims["n_ctx"])
    matmul, total = [], []
    for s in seq_lens:
        dims = {**analysis.dims, "seq_len": s, "n_ctx": max(s, analysis.dims["n_ctx"])}
        m = evaluate(analysis.expressions["flops.forward_matmul"], dims)
        o = evaluate(analysis.expressions["flops.forward_other"], dims)
        matmul.append(m / s)
        total.append((m + o) / s)
    return list(seq_lens), matmul, total


def latex_document(title: str, body: list[str]) -> str:
    r"""A standalone LaTeX document (pdflatex; packages of every TeX Live base install): title,
    date and ``body``. The tables it inputs need only ``booktabs``.

    >>> print(latex_document("t", ["x"]).splitlines()[0])
    \documentclass[11pt]{article}
    """
    return "\n".join([
        r"\documentclass[11pt]{article}", r"\usepackage[margin=2cm]{geometry}",
        r"\usepackage{booktabs,amsmath,graphicx}",
        # let floats fill pages: a report is mostly tables and figures
        r"\renewcommand{\topfraction}{0.9}", r"\renewcommand{\bottomfraction}{0.8}",
        r"\renewcommand{\textfraction}{0.07}", r"\renewcommand{\floatpagefraction}{0.75}",
        r"\setcounter{topnumber}{3}", r"\setcounter{totalnumber}{5}",
        f"\\title{{{latex_escape(title)}}}",
        r"\author{written by blockalg}", r"\date{\today}", r"\begin{document}", r"\maketitle",
        "", *body, r"\end{document}"])


# ---------------------------------------------------------------------------------------------
# The command line every study in analyses/ shares.


def study_main(build, name: str, argv=None) -> int:
    """Run a study: ``build(quick) -> ReportFolder``, then write it to ``reports/<name>`` (or
    ``--out``), or with ``--check`` compare it with what is on disk (exit 1 on drift).

    ``--quick`` builds the smaller CI version (write it elsewhere with ``--out``: the committed
    report is the full one).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=f"analyses/{name}.py", description=build.__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds (for CI)")
    parser.add_argument("--out", default=None, help=f"folder to write (default reports/{name})")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the committed text files differ")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else reports_dir() / name
    folder = build(quick=args.quick)
    if args.check:
        return drift_report(folder, out, lambda line: print(line, file=sys.stderr))
    folder.write(out)
    print(f"wrote {len(folder.files)} files to {out}", file=sys.stderr)
    return 0


def drift_report(folder: ReportFolder, out, say) -> int:
    """Compare ``folder``'s text files with ``out``; ``say`` one line per differing file and a
    closing line either way. Returns the exit code: 1 on drift, else 0."""
    differing = folder.differences(out)
    for name in differing:
        say(f"differs: {Path(out) / name}")
    if differing:
        say(f"drift: {len(differing)} text file(s) in {out} differ from what would be written")
        return 1
    say(f"no drift: the {len(folder.text_files())} text files of {out} are what would be written")
    return 0


def reports_dir() -> Path:
    """The repository's ``reports/`` folder (next to ``analyses/``)."""
    return Path(__file__).resolve().parents[2] / "reports"
