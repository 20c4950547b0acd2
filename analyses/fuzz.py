"""Fuzz blockalg's boundaries: graph files, Hugging Face configs and ``--set`` values, generated
and mutated from the real catalog and real configs by hypothesis, run in-process through the CLI
with a time budget per case, and tallied.

    python analyses/fuzz.py                          # 10,000 graph files, 3,000 configs, 1,000 --set
    python analyses/fuzz.py --graphs 200 --configs 100 --sets 50 --seed 1

The contract every case must keep: exit 0 (an answer) or exit 2 with one line ``blockalg: error:
...`` (exit 1 only from ``check``, a failed check); never a traceback, an internal error (exit
3), more than ``--budget`` seconds (a hang), or unbounded memory. Seconds are CPU seconds of this
process (``ITIMER_PROF``): on a shared machine wall time measures the neighbours' load too. Prints the tally: cases, answers,
clean errors, crashes, hangs, the slowest case and the peak memory of the process; exits 1 on any
crash or hang. Every failure found becomes a regression test (tests/test_hostile.py); the suite
runs a few hundred of these cases (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from click.testing import CliRunner
from hypothesis import strategies as st

from blockalg.cli import main as cli
from blockalg.graphs.ops import get_op, op_names
from blockalg.graphs.presets import SETTABLE
from blockalg.graphs.serialize import to_data
from blockalg.graphs.variants import catalog

ROOT = Path(__file__).resolve().parent.parent
OPS = {name: get_op(name) for name in op_names()}
HF_CONFIGS = ROOT / "tests" / "data" / "hf"


# ---------------------------------------------------------------------------------------------
# The seeds: the real catalog and real configs.


@lru_cache(maxsize=None)
def _catalog_json() -> dict[str, str]:
    return {v.name: json.dumps(to_data(v.graph())) for v in catalog()}


def catalog_graph(name: str) -> dict:
    """A fresh copy of variant ``name``'s node-link data."""
    return json.loads(_catalog_json()[name])


@lru_cache(maxsize=None)
def _config_json() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(HF_CONFIGS.glob("*.json"))}


def real_config(name: str) -> dict:
    return json.loads(_config_json()[name])


# ---------------------------------------------------------------------------------------------
# Values: JSON of every type, hostile numbers and names, expressions.

NUMBERS = [0, 1, -1, 2, 3, 7, 64, 768, 2**31, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 10**30,
           -(2**63), 0.5, 1e-300, 1.5e308, -0.0, 3.14]
NAMES = ["x", "out", "ln_1", "attn", "ffn", "forward", "train", "a b", "ln\nx", "ünï", "", "1x",
         "_", "x" * 300, "\u202e", "\ud800", "\x00", "__class__"]
SYMBOLS = ["L", "d_model", "n_heads", "d_head", "n_kv_heads", "d_ff", "n_layers", "n_ctx",
           "seq_len", "batch", "vocab", "n_experts", "top_k", "x", "__import__", "e", "pi"]
ATOMS = ["0", "1", "2", "4", "0.5", "1e-3", "1e400", "1e308", "99999999999999999999999",
         "-1", "1/0", "0**-1", "sqrt(-1)", "\ud800", "", " ", "(", "1 +", "__import__('os')",
         "lambda: 1", "[1]", "1 if 1 else 0", "1 and 2", "x.y", "d_model[0]", "'s'"]
HOSTILE_TEXT = ["-" * 10_000 + "1", "1+" * 5_000 + "1", "(" * 500 + "1" + ")" * 500,
                "((((((2**64)**64)**64)**64)**64)**64)", "9**9**9**9", "L**L**L",
                "d_model**d_model**d_model", "2**(2**64)", "floor(L/100) - floor(L/101) + L",
                "sqrt(" * 40 + "L" + ")" * 40, "L/(L-L)", "1e-400", "1" * 5000]

json_scalars = (st.none() | st.booleans() | st.sampled_from(NUMBERS)
                | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=12) | st.sampled_from(NAMES) | st.sampled_from(op_names()))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4),
                           max_leaves=8)


def _binary(parts):
    return st.tuples(parts, st.sampled_from(["+", "-", "*", "/", "**", " ** ", "%", "//"]), parts) \
        .map(lambda t: f"({t[0]}{t[1]}{t[2]})")


expressions = st.recursive(
    st.sampled_from(SYMBOLS) | st.sampled_from(ATOMS) | st.integers(-100, 100).map(str)
    | st.sampled_from(HOSTILE_TEXT),
    lambda parts: _binary(parts) | parts.map(lambda p: f"-{p}")
    | st.tuples(st.sampled_from(["sqrt", "floor", "ceiling", "exp", "print"]), parts)
    .map(lambda t: f"{t[0]}({t[1]})"),
    max_leaves=12) | st.text(max_size=40)

scales = expressions | st.sampled_from(NUMBERS) | json_values


def deep(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


# ---------------------------------------------------------------------------------------------
# Mutations of node-link data.


def _pick(data, items):
    return items[data.draw(st.integers(0, len(items) - 1))] if items else None


def mutate_graph(data, graph: dict) -> dict:
    """One random change to node-link data (in place, and returned)."""
    nodes = graph["nodes"] if isinstance(graph.get("nodes"), list) else []
    edges = graph["edges"] if isinstance(graph.get("edges"), list) else []
    attrs = graph["graph"] if isinstance(graph.get("graph"), dict) else {}
    kind = data.draw(st.sampled_from([
        "drop node", "drop edge", "add node", "add edge", "rename node", "node attribute",
        "op", "edge scale", "edge attribute", "graph attribute", "segments", "streams",
        "duplicate", "replace with junk", "deep", "reverse edge", "scale expression",
        "valid attribute", "valid attribute", "insert on edge", "insert on edge"]))
    ids = [n.get("id") for n in nodes if isinstance(n, dict)]
    if kind == "drop node" and nodes:
        nodes.pop(data.draw(st.integers(0, len(nodes) - 1)))
    elif kind == "drop edge" and edges:
        edges.pop(data.draw(st.integers(0, len(edges) - 1)))
    elif kind == "add node":
        nodes.append({"id": data.draw(st.sampled_from(NAMES) | st.text(max_size=6)),
                      "op": data.draw(st.sampled_from(op_names()) | json_scalars)})
    elif kind == "add edge" and ids:
        edges.append({"source": _pick(data, ids), "target": _pick(data, ids)})
    elif kind == "rename node" and ids:
        old, new = _pick(data, ids), data.draw(st.sampled_from(NAMES) | json_scalars)
        for n in nodes:
            if isinstance(n, dict) and n.get("id") == old:
                n["id"] = new
        if data.draw(st.booleans()):
            for e in edges:
                for end in ("source", "target"):
                    if isinstance(e, dict) and e.get(end) == old:
                        e[end] = new
    elif kind == "node attribute" and nodes:
        node = _pick(data, nodes)
        if isinstance(node, dict):
            key = data.draw(st.sampled_from(["bias", "width", "activation", "gated", "qk_norm",
                                             "rotary", "head_scale", "proj_bias", "value",
                                             "learnable", "stream", "junk"]))
            node[key] = data.draw(json_values | expressions)
    elif kind == "op" and nodes:
        node = _pick(data, nodes)
        if isinstance(node, dict):
            node["op"] = data.draw(st.sampled_from(op_names()) | json_values)
    elif kind in ("edge scale", "scale expression") and edges:
        edge = _pick(data, edges)
        if isinstance(edge, dict):
            edge["scale"] = data.draw(expressions if kind == "scale expression" else scales)
    elif kind == "edge attribute" and edges:
        edge = _pick(data, edges)
        if isinstance(edge, dict):
            edge[data.draw(st.sampled_from(["source", "target", "junk", "key"]))] = \
                data.draw(json_values)
    elif kind == "graph attribute":
        key = data.draw(st.sampled_from(["final_norm", "positions", "position_offset",
                                         "tied_embeddings", "init", "name", "head", "equations",
                                         "reference", "junk", "fin\nal_norm"]))
        attrs[key] = data.draw(json_values | st.sampled_from(NUMBERS) | st.sampled_from(
            ["layernorm", "rmsnorm", {"op": "layernorm", "width": "d_ff"}, "learned", "none",
             "gpt2", "deepnorm"]))
    elif kind == "segments":
        spec = attrs.get("segments")
        if isinstance(spec, list) and spec and isinstance(spec[0], dict):
            segment = _pick(data, spec)
            if isinstance(segment, dict):
                segment["layers"] = data.draw(expressions | json_scalars)
        else:
            attrs["segments"] = [{"block": copy.deepcopy(graph), "layers": data.draw(expressions)},
                                 {"block": catalog_graph("pre-ln"), "layers": "L"}]
            graph["nodes"], graph["edges"] = [], []
    elif kind == "streams":
        attrs["streams"] = data.draw(json_values | st.sampled_from(
            [{"a": "embedding", "d": "zero"}, {"x": "embedding"},
             {f"s{i}": "embedding" for i in range(6)}]))
    elif kind == "duplicate" and nodes:
        nodes.append(copy.deepcopy(_pick(data, nodes)))
    elif kind == "replace with junk":
        key = data.draw(st.sampled_from(["nodes", "edges", "graph", "directed", "multigraph",
                                         "links"]))
        graph[key] = data.draw(json_values)
    elif kind == "deep":
        attrs["junk"] = deep(data.draw(st.sampled_from([10, 63, 65, 200])))
    elif kind == "valid attribute" and nodes:
        node = _pick(data, nodes)
        op = OPS.get(node.get("op")) if isinstance(node, dict) and isinstance(node.get("op"), str) else None
        if op is not None and op.attributes:
            key = data.draw(st.sampled_from(sorted(op.attributes)))
            kind_of = op.attributes[key][1]
            node[key] = data.draw(st.sampled_from(list(kind_of)) if isinstance(kind_of, tuple)
                                  else st.booleans() if kind_of is bool
                                  else expressions if kind_of == "expression" else json_scalars)
    elif kind == "insert on edge" and edges:
        edge = _pick(data, edges)
        if isinstance(edge, dict) and isinstance(edge.get("target"), str):
            new = f"fz{len(nodes)}"
            op = data.draw(st.sampled_from(["layernorm", "rmsnorm", "dyt", "scale", "attention",
                                            "ffn", "moe"]))
            nodes.append({"id": new, "op": op})
            edges.append({"source": new, "target": edge["target"]})
            edge["target"] = new
    elif kind == "reverse edge" and edges:
        edge = _pick(data, edges)
        if isinstance(edge, dict):
            edge["source"], edge["target"] = edge.get("target"), edge.get("source")
    return graph


def mutate_text(data, text: str) -> str:
    """A change to the file's text: truncation, a stray byte, deep nesting, a huge integer."""
    kind = data.draw(st.sampled_from(["truncate", "insert", "huge int", "nest", "nan", "bom"]))
    at = data.draw(st.integers(0, max(0, len(text) - 1)))
    if kind == "truncate":
        return text[:at]
    if kind == "insert":
        return text[:at] + data.draw(st.sampled_from(["\x00", "\ud800", "{", "]", ",", '"', "\\",
                                                      "\udcff", "NaN", "Infinity"])) + text[at:]
    if kind == "huge int":
        return text.replace("{", '{"big": ' + "9" * data.draw(st.sampled_from([30, 4400, 10000])) + ", ", 1)
    if kind == "nest":
        depth = data.draw(st.sampled_from([70, 1000, 100_000]))
        return text.replace("{", '{"deep": ' + "[" * depth + "]" * depth + ", ", 1)
    if kind == "nan":
        return text.replace("true", "NaN", 1).replace("null", "-Infinity", 1)
    return "\ufeff" + text


# ---------------------------------------------------------------------------------------------
# Cases: a command line and the files it reads.

LAYERS = ["1", "2", "3", "12", "48", "1000", "7143", "100000", "1000000000", str(2**63 - 1)]
FORMATS = ["table", "markdown", "latex", "csv", "json"]


def _file_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def graph_case(data) -> tuple[list[str], bytes]:
    """A graph file mutated from the catalog, and a command to run on it (``{file}`` in args)."""
    graph = catalog_graph(data.draw(st.sampled_from(list(_catalog_json()))))
    for _ in range(data.draw(st.integers(0, 4))):
        mutate_graph(data, graph)
    text = json.dumps(graph)
    if data.draw(st.integers(0, 9)) == 0:
        text = mutate_text(data, text)
    return graph_command(data), _file_bytes(text)


def graph_command(data) -> list[str]:
    command = data.draw(st.sampled_from(["compare", "compare", "paths", "show", "check", "memory"]))
    if command == "compare":
        extra = data.draw(st.sampled_from([[], ["--preset", "tiny"], ["--symbolic"],
                                           ["--set", f"n_layers={_pick(data, LAYERS)}"]]))
        return ["compare", "{file}", *extra, "--format", data.draw(st.sampled_from(FORMATS))]
    if command == "paths":
        detail = data.draw(st.sampled_from([[], [], ["--detail"], ["--no-detail"]]))
        return ["paths", "{file}", "--layers", data.draw(st.sampled_from(LAYERS)), *detail,
                "--format", data.draw(st.sampled_from(FORMATS))]
    if command == "show":
        return ["show", "{file}", "--format",
                data.draw(st.sampled_from(["text", "json", "mermaid", "dot"]))]
    if command == "memory":
        return [data.draw(st.sampled_from(["memory", "inference"])), "{file}",
                "--format", data.draw(st.sampled_from(FORMATS))]
    if data.draw(st.integers(0, 19)):  # torch is the slow path: one graph case in 100
        return ["compare", "{file}", "--format", "json"]
    return ["check", "{file}", "--preset", "tiny", "--device", "meta", "--format", "json"]


CONFIG_KEYS = ["hidden_size", "n_embd", "num_attention_heads", "n_head", "num_hidden_layers",
               "n_layer", "intermediate_size", "n_inner", "vocab_size", "max_position_embeddings",
               "n_positions", "num_key_value_heads", "head_dim", "model_type", "_name_or_path",
               "tie_word_embeddings", "hidden_act", "activation_function", "use_parallel_residual",
               "num_local_experts", "num_experts_per_tok", "new_decoder_architecture",
               "multi_query", "parallel_attn", "do_layer_norm_before", "word_embed_proj_dim",
               "rope_scaling", "sliding_window", "alibi", "bias", "attention_bias",
               "num_ln_in_parallel_attn", "ffn_dim", "junk", "bad\nkey"]


def config_case(data) -> tuple[list[str], bytes]:
    """A Hugging Face config mutated from a real one, and a command to run on it."""
    config = real_config(data.draw(st.sampled_from(list(_config_json()))))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["set", "set", "drop", "model type", "junk"]))
        key = data.draw(st.sampled_from(CONFIG_KEYS + list(config)))
        if kind == "set":
            config[key] = data.draw(json_values | st.sampled_from(NUMBERS + [True, False]))
        elif kind == "drop":
            config.pop(key, None)
        elif kind == "model type":
            config["model_type"] = data.draw(st.sampled_from(list(_config_json())) | json_values)
        else:
            config = data.draw(st.sampled_from([config, [config], deep(70), "config", None]))
            break
    text = json.dumps(config)
    if data.draw(st.integers(0, 9)) == 0:
        text = mutate_text(data, text)
    command = data.draw(st.sampled_from([
        ["compare", "--hf-config", "{file}", "--format", "json"],
        ["compare", "--hf-config", "{file}"],
        ["show", "--hf-config", "{file}"],
        ["paths", "--hf-config", "{file}", "--format", "json"]]))
    return command, _file_bytes(text)


sensible = st.integers(1, 4096).map(str)
set_values = (sensible | sensible | sensible | st.sampled_from([str(v) for v in NUMBERS])
              | st.integers(-(2**70), 2**70).map(str) | st.text(max_size=12)
              | st.sampled_from(["", " 12", "1_000", "+3", "٣", "1e3", "0x10", "9" * 5000, "12\n"]))


def set_case(data) -> tuple[list[str], bytes]:
    """``--set NAME=VALUE`` values on a catalog variant."""
    items = []
    if data.draw(st.booleans()):  # one value that keeps the preset consistent, possibly huge
        name = data.draw(st.sampled_from(["n_layers", "vocab", "batch", "d_ff", "n_experts"]))
        value = data.draw(st.integers(2, 4096) | st.sampled_from([2**31, 10**12, 2**62, 2**63 - 1]))
        items += ["--set", f"{name}={value}"]
    for _ in range(data.draw(st.integers(0 if items else 1, 2))):
        name = data.draw(st.sampled_from(list(SETTABLE)) | st.sampled_from(list(SETTABLE))
                         | st.text(max_size=8))
        items += ["--set", f"{name}{data.draw(st.sampled_from(['=', '=', '=', '==', '', ' = ']))}"
                           f"{data.draw(set_values)}"]
    variant = data.draw(st.sampled_from(list(_catalog_json())))
    command = data.draw(st.sampled_from([["compare", variant, "--format", "json"],
                                         ["paths", variant, "--format", "csv"],
                                         ["compare", variant, "--preset", "tiny"],
                                         ["memory", variant], ["inference", variant]]))
    return [*command, *items], b""


# ---------------------------------------------------------------------------------------------
# Running a case and judging its outcome.


class Hang(BaseException):
    """Raised by the CPU-time alarm when a case runs past its budget (a BaseException: nothing
    in blockalg may catch it)."""


def _alarm(signum, frame):
    raise Hang()


@dataclass
class Outcome:
    kind: str  # "ok", "clean error", "check failed", "crash", "hang"
    args: list[str]
    seconds: float
    detail: str = ""


def run_case(args: list[str], content: bytes, budget: float = 10.0) -> Outcome:
    """Run ``blockalg ARGS`` in-process (``{file}`` replaced by a file holding ``content``) and
    judge the outcome; a case past ``budget`` CPU seconds is stopped and counted as a hang."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.json"
        path.write_bytes(content)
        args = [str(path) if a == "{file}" else a for a in args]
        previous = signal.signal(signal.SIGPROF, _alarm)
        signal.setitimer(signal.ITIMER_PROF, budget)
        start = time.process_time()
        try:
            result = CliRunner().invoke(cli, args)
        except Hang:
            return Outcome("hang", args, time.process_time() - start)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, previous)
        return judge(result, args, time.process_time() - start)


def judge(result, args, seconds) -> Outcome:
    stderr = result.stderr.strip().splitlines()
    if result.exit_code == 0:
        return Outcome("ok", args, seconds)
    clean = (stderr and stderr[-1].startswith("blockalg: error: ") and "Traceback" not in result.output)
    if result.exit_code == 2 and clean:
        return Outcome("clean error", args, seconds, stderr[-1])
    if result.exit_code == 1 and args[0] == "check" and "check(s) failed" in result.stderr:
        return Outcome("check failed", args, seconds, stderr[-1])
    detail = result.output[-2000:] if result.exception is None or isinstance(result.exception, SystemExit) \
        else repr(result.exception)
    return Outcome("crash", args, seconds, f"exit {result.exit_code}: {detail}")


@dataclass
class Tally:
    outcomes: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    slowest: Outcome | None = None

    def add(self, family: str, outcome: Outcome) -> None:
        counts = self.outcomes.setdefault(family, {})
        counts[outcome.kind] = counts.get(outcome.kind, 0) + 1
        if sum(counts.values()) % 500 == 0:
            print(f"{family}: {sum(counts.values())} cases, {counts}", file=sys.stderr, flush=True)
        if outcome.kind in ("crash", "hang", "check failed"):
            self.failures.append((family, outcome))
        if self.slowest is None or outcome.seconds > self.slowest.seconds:
            self.slowest = outcome

    def report(self) -> str:
        lines = [f"{'family':<8} {'cases':>7} {'answers':>8} {'clean errors':>13} "
                 f"{'check failed':>13} {'crashes':>8} {'hangs':>6}"]
        for family, c in self.outcomes.items():
            lines.append(f"{family:<8} {sum(c.values()):>7} {c.get('ok', 0):>8} "
                         f"{c.get('clean error', 0):>13} {c.get('check failed', 0):>13} "
                         f"{c.get('crash', 0):>8} {c.get('hang', 0):>6}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if self.slowest:
            lines.append(f"slowest case: {self.slowest.seconds:.2f} CPU s ({self.slowest.kind}): "
                         f"{_short(self.slowest.args)}")
        lines.append(f"peak memory (max RSS of this process): {peak:.0f} MB")
        for family, o in self.failures[:20]:
            lines.append(f"{o.kind}: {family}: {_short(o.args)} ({o.seconds:.1f} s) {o.detail[:500]}")
        return "\n".join(lines)


def _short(args) -> str:
    return " ".join(a if len(a) < 80 else a[:77] + "..." for a in args)


FAMILIES = {"graphs": graph_case, "configs": config_case, "sets": set_case}


def fuzz(family: str, examples: int, tally: Tally, budget: float = 10.0, seed: int | None = None,
         files: Path | None = None) -> None:
    """Run ``examples`` cases of ``family`` (hypothesis generates them; nothing is shrunk) and
    add their outcomes to ``tally``; a failing case's file is kept in ``files``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fix_seed

    make = FAMILIES[family]

    @settings(max_examples=examples, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        args, content = make(data)
        outcome = run_case(args, content, budget)
        tally.add(family, outcome)
        if files is not None and outcome.kind in ("crash", "hang"):
            files.mkdir(parents=True, exist_ok=True)
            (files / f"{family}-{len(tally.failures)}.json").write_bytes(content)
            (files / f"{family}-{len(tally.failures)}.txt").write_text(
                f"{outcome.kind}: {' '.join(outcome.args)}\n{outcome.detail}\n")

    if seed is not None:
        one = fix_seed(seed)(one)
    one()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="analyses/fuzz.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=10_000, help="graph-file cases")
    parser.add_argument("--configs", type=int, default=3_000, help="Hugging Face config cases")
    parser.add_argument("--sets", type=int, default=1_000, help="--set cases")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="CPU seconds per case; more is a hang")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="folder for failing cases' files")
    parser.add_argument("--memory", type=int, default=2048,
                        help="MB of data this process may allocate (more raises MemoryError, a "
                             "crash, instead of swapping the machine)")
    args = parser.parse_args(argv)
    limit = args.memory * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    tally, start, cpu = Tally(), time.perf_counter(), time.process_time()
    for family, count in (("graphs", args.graphs), ("configs", args.configs), ("sets", args.sets)):
        if count:
            fuzz(family, count, tally, args.budget, args.seed, args.keep)
            print(f"{family}: done after {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(tally.report())
    print(f"total: {time.process_time() - cpu:.0f} CPU s, {time.perf_counter() - start:.0f} s wall")
    bad = sum(c.get("crash", 0) + c.get("hang", 0) for c in tally.outcomes.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
