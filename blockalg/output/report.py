"""Report folders: Markdown, LaTeX (booktabs), CSV, JSON and figures, written all at once.

A :class:`ReportFolder` collects files in memory and :meth:`~ReportFolder.write` puts them in place
through a temporary sibling folder and a rename, so an interrupted run never leaves half a report.
Text files are reproducible byte for byte; :meth:`~ReportFolder.differences` lists those that
differ from a folder on disk (the ``--check`` of CI). Figures are written but not compared
(their bytes depend on the matplotlib and font versions).

:func:`variant_report` is what ``blockalg report`` writes; the studies in ``analyses/`` build
their own folders with the same pieces.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import BlockalgError
from .render import Table, graph_to_mermaid
from .tables import written

TEXT_SUFFIXES = {".md", ".tex", ".csv", ".json", ".txt", ".mmd"}
MARKER = ".blockalg-report"  # marks a folder blockalg wrote, so rewriting it may replace it
FIGURE_FORMATS = ("png", "svg")


def replaceable(out) -> Path:
    """``out`` as an absolute path, or a one-line error when it is there and blockalg did not
    write it (a report replaces its folder as a whole). Commands call it before the work too."""
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise BlockalgError(f"{out}: exists and was not written by blockalg; choose a new or "
                            f"empty folder")
    return out


class ReportFolder:
    """The files of one report, relative path → bytes."""

    def __init__(self, thousands: str = ","):
        self.files: dict[str, bytes] = {}
        self.thousands = thousands

    def add_text(self, name: str, text: str) -> str:
        self.files[name] = (text.rstrip("\n") + "\n").encode("utf-8")
        return name

    def add_json(self, name: str, data) -> str:
        return self.add_text(name, json.dumps(data, indent=2, sort_keys=False))

    def add_table(self, stem: str, table: Table) -> str:
        """``stem.md``, ``stem.tex`` and ``stem.csv``; returns the Markdown text for embedding.
        CSV cells hold plain integers (no separators) so a spreadsheet reads numbers."""
        markdown = table.to_markdown()
        self.add_text(f"{stem}.md", f"**{table.title}**\n\n{markdown}")
        self.add_text(f"{stem}.tex", table.to_latex(self.thousands))
        self.add_text(f"{stem}.csv", table.to_csv())
        return markdown

    def add_figure(self, stem: str, fig) -> str:
        """``stem.png`` and ``stem.svg``; returns the PNG's path for embedding."""
        from .plots import figure_bytes, pyplot

        for fmt in FIGURE_FORMATS:
            self.files[f"{stem}.{fmt}"] = figure_bytes(fig, fmt)
        pyplot().close(fig)
        return f"{stem}.png"

    def write(self, out) -> Path:
        """Replace the folder ``out`` with these files (temporary folder + rename)."""
        out = replaceable(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a report is not
        try:
            (staging / MARKER).write_text("written by blockalg; the whole folder is replaced on rewrite\n")
            for name, data in self.files.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(data)
            if out.exists():
                retired = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
                os.replace(out, retired / out.name)
                os.replace(staging, out)
                shutil.rmtree(retired)
            else:
                os.replace(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return out

    def differences(self, out) -> list[str]:
        """Text files that are missing in ``out``, differ from it, or are extra there."""
        out = Path(out)
        texts = {n: d for n, d in self.files.items() if Path(n).suffix in TEXT_SUFFIXES}
        differ = [n for n, d in texts.items() if not (out / n).is_file() or (out / n).read_bytes() != d]
        on_disk = {str(p.relative_to(out)) for p in out.rglob("*")
                   if p.is_file() and p.suffix in TEXT_SUFFIXES} if out.is_dir() else set()
        return sorted(differ + [n for n in on_disk - set(texts)])


def latex_math(expr) -> str:
    """A sympy expression as inline LaTeX with the papers' symbol names (L, d, s, V...)."""
    return written(expr, "latex")


# ---------------------------------------------------------------------------------------------
# The folder of `blockalg report`.


def variant_report(graphs, shapes, *, empirical: bool = False, thousands: str = ",",
                   seq_lens=(128, 256, 512, 1024, 2048, 4096, 8192)) -> ReportFolder:
    """Everything blockalg says about ``graphs``, at each shape of ``shapes`` (label → dims, or
    preset names)."""
    from ..analysis.analyze import analyze, quantity_keys
    from ..graphs.presets import resolve_dims
    from . import plots
    from .tables import closed_form_table, comparison_table

    folder = ReportFolder(thousands)
    names = [g.graph["name"] for g in graphs]
    md = [f"# blockalg report: {', '.join(names)}", "",
          "Exact counts from the block graphs (blockalg). Parameters are whole-model figures; FLOPs "
          "are for one sequence of seq_len tokens at batch 1, unembedding included, attention at "
          "the dense s×s cost (see the README's conventions).", ""]
    data = {"variants": names, "presets": {}}
    shapes = shapes if isinstance(shapes, dict) else {p: resolve_dims(p) for p in shapes}
    for preset, dims in shapes.items():
        analyses = [analyze(g, preset=preset, dims=dims) for g in graphs]
        data["presets"][preset] = {"dims": dims, "variants": [a.to_dict() for a in analyses]}
        md += [f"## {preset}", "", ", ".join(f"{k} = {v}" for k, v in dims.items()), ""]
        md += [folder.add_table(f"tables/{preset}/compare", comparison_table(analyses, quantity_keys())), ""]
        md += [f"![parameters per component]({folder.add_figure(f'figures/{preset}/params', plots.params_by_component(analyses))})", ""]
        curves = {a.name: flop_curve(a, [s for s in seq_lens]) for a in analyses}
        md += [f"![FLOPs per token]({folder.add_figure(f'figures/{preset}/flops_per_token', plots.flops_per_token(curves, preset))})", ""]
        layers = dims["n_layers"]
        stats = {a.name: a.paths for a in analyses}
        md += [f"![gradient paths]({folder.add_figure(f'figures/{preset}/paths', plots.path_distribution(stats, layers))})", ""]
    closed = closed_form_table(analyses, quantity_keys(), "latex")
    md += ["## Closed forms", "", "Defaults applied where the last preset satisfies them "
           "(d_ff = 4d, d_head = d/h).", "", folder.add_table("tables/closed_forms", closed), ""]
    folder.add_text("closed_forms.tex", "\n".join(
        f"% {a.name}: {key}\n\\[ {latex_math(a.closed_form(key)).strip('$')} \\]"
        for a in analyses for key in quantity_keys()))
    if empirical:
        from ..model.gradients import gradient_norms

        results = [gradient_norms(g) for g in graphs]
        data["gradients"] = [r.to_dict() for r in results]
        md += ["## Gradient norms at initialisation (measured)", "",
               f"![gradient norms]({folder.add_figure('figures/gradients', plots.gradient_norms(results))})", ""]
    md += ["## Block graphs", ""]
    for g in graphs:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", g.graph["name"]).strip(".") or "block"
        folder.add_text(f"graphs/{name}.mmd", graph_to_mermaid(g))
        png = folder.add_figure(f"figures/graph_{name}", plots.block_drawing(g))
        md += [f"### {name}", "", "; ".join(g.graph.get("equations", [])), "",
               "```mermaid", graph_to_mermaid(g), "```", "", f"![{name}]({png})", ""]
    folder.add_json("data.json", data)
    folder.add_text("README.md", "\n".join(md))
    folder.add_text("report.tex", latex_document(folder))
    return folder


def flop_curve(analysis, seq_lens):
    """Forward FLOPs per token at each sequence length: (lengths, matmul, matmul + other)."""
    from ..graphs.expr import evaluate

    matmul, total = [], []
    for s in seq_lens:
        dims = {**analysis.dims, "seq_len": s, "n_ctx": max(s, analysis.dims["n_ctx"])}
        m = evaluate(analysis.expressions["flops.forward_matmul"], dims)
        o = evaluate(analysis.expressions["flops.forward_other"], dims)
        matmul.append(m / s)
        total.append((m + o) / s)
    return list(seq_lens), matmul, total


def latex_document(folder: ReportFolder) -> str:
    """A standalone LaTeX document that inputs every table of the folder (compiles as is)."""
    tables = sorted(n for n in folder.files if n.endswith(".tex") and n.startswith("tables/"))
    body = []
    for name in tables:
        body += [r"\begin{table}[h]\centering\small", rf"\input{{{name}}}", r"\end{table}", ""]
    return "\n".join([r"\documentclass{article}", r"\usepackage[margin=1.5cm,landscape]{geometry}",
                      r"\usepackage{booktabs}", r"\usepackage[utf8]{inputenc}",
                      r"\DeclareUnicodeCharacter{0394}{$\Delta$}", r"\begin{document}", *body,
                      r"\section*{Closed forms}", r"\input{closed_forms.tex}", r"\end{document}"])


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
        differing = folder.differences(out)
        for item in differing:
            print(f"differs: {out / item}", file=sys.stderr)
        return 1 if differing else 0
    folder.write(out)
    print(f"wrote {len(folder.files)} files to {out}", file=sys.stderr)
    return 0


def reports_dir() -> Path:
    """The repository's ``reports/`` folder (next to ``analyses/``)."""
    return Path(__file__).resolve().parents[2] / "reports"
