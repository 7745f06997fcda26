"""Generated hostile specs (issue 16) and the check each must pass, shared by
tests/test_spec_fuzz.py (a few hundred, in CI) and benchmarks/fuzz_spec.py (the long run).

Two levels: the YAML text or bytes (binary junk, text that is not UTF-8, byte-order marks,
anchor bombs, deep nesting, keys given twice, hostile number literals, very long strings) and
the structure (a valid spec, audits/toyworld.yaml, with values replaced, deleted, duplicated,
copied from elsewhere or given the wrong type). Every one is read the way ``auditkit plan``
reads it, in this process: the outcome must be a spec or usage error (exit 2), located where
it can be, or a plan, within bounded time.
"""

from __future__ import annotations

import codecs
import copy
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
BASE_TEXT = (ROOT / "audits" / "toyworld.yaml").read_text(encoding="utf-8")
BASE: dict[str, Any] = yaml.safe_load(BASE_TEXT)

# --- the check ----------------------------------------------------------------------------------

WHOLE_FILE = (
    "the file is",
    "the spec is",
    "the top level",
    "spec_version ",
    "character ",
    "... and ",
)
"""How the problems that concern the whole file (no line) begin."""


@dataclass(frozen=True)
class Outcome:
    """What reading one spec gave: ``kind`` 'ok', 'refused' (a spec or usage error) or
    'crash' (any other exception: a defect), the exception's type, the time it took (wall and
    CPU seconds), the growth of the process's peak RSS while it ran, and the message."""

    kind: str
    error: str
    wall: float
    cpu: float
    rss_growth: int
    message: str

    @property
    def unlocated(self) -> bool:
        """A spec error with a problem that names neither a line nor the whole file."""
        if self.error != "SpecError":
            return False
        lines = self.message.split("\n")
        problems = [p.strip()[2:] for p in lines if p.startswith("  - ")]
        return any("line " not in p and not p.startswith(WHOLE_FILE) for p in problems)


def peak_rss() -> int:
    """The process's peak resident memory so far, in bytes (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def read_like_plan(data: bytes, folder: Path) -> Outcome:
    """Write ``data`` as ``folder/audit/spec.yaml`` and read it as ``auditkit plan`` does
    (:func:`load_checked_spec`, :func:`resolve_spec`, :func:`plan_audit`, the cost and the
    later passes), in this process."""
    from auditkit.analyses.checks import load_checked_spec
    from auditkit.errors import SpecError, UsageError
    from auditkit.estimate import estimate_cost
    from auditkit.layout import resolve_spec
    from auditkit.passes.cost import later_passes
    from auditkit.plan import plan_audit

    path = folder / "audit" / "spec.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    before = peak_rss()
    # the reading thread's CPU time: reading a spec is single-threaded, and other threads of the
    # test worker (a pool left by an earlier test) must not count against it
    wall, cpu = time.perf_counter(), time.thread_time()
    kind, error, message = "ok", "", ""
    try:
        spec = resolve_spec(load_checked_spec(path), folder / "cache")
        plan = plan_audit(spec)
        cost = estimate_cost(spec, plan, device="cpu")
        later_passes(spec, plan, cfg_capable=cost.cfg_capable)
    except (SpecError, UsageError) as exc:
        kind, error, message = "refused", type(exc).__name__, str(exc)
    except Exception as exc:  # the defect this looks for
        kind, error, message = "crash", type(exc).__name__, f"{exc!r}"[:2000]
    return Outcome(
        kind,
        error,
        time.perf_counter() - wall,
        time.thread_time() - cpu,
        peak_rss() - before,
        message,
    )


# --- values -------------------------------------------------------------------------------------

HOSTILE_STRINGS = (
    "",
    " ",
    "\0",
    "a\0b",
    "../../etc",
    "./../x",
    "~nosuchuser-auditkit/x",
    "~",
    "/",
    "{term}",
    "a {term} {term}",
    "a {term} {x}",
    "{",
    "builtin:toyworld-biased",
    "builtin:nope",
    "auto",
    "all",
    "cuda:99",
    "ümlaut ✓ 𝔘 \u202e rtl",
    "x" * 10_000,
    "null",
    "True",
)
HOSTILE_LITERALS = (
    "1e999",
    "-1e999",
    ".nan",
    ".NaN",
    ".inf",
    "-.inf",
    "0x7fffffffffffffffffffffff",
    "99999999999999999999999999999999999999",
    "-99999999999999999999999999",
    "-1",
    "0",
    "-0.0",
    "0b101",
    "0o17",
    "1_000",
    "190:20:30",
    "true",
    "no",
    "null",
    "~",
    "2001-02-30",
    "2001-12-14t21:59:43.10-05:00",
    "!!binary aGVsbG8=",
    "!!binary ===",
    "!!set {a, b}",
    "!!omap [a: 1, b: 2]",
    "!!python/object:os.system x",
    "!!float nope",
    "!!int 1.5",
    "!!str",
    "&a [*a]",
    "*undefined",
    "[]",
    "{}",
    "''",
    '"\\0"',
    '"\\ud800"',
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, -1, 0, 1, 100_000, 100_001]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(HOSTILE_STRINGS),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=24,
)


# --- structure level ----------------------------------------------------------------------------


def _paths(node: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if here:
        yield here
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*here, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*here, i))


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated_specs(draw: st.DrawFn) -> bytes:
    """audits/toyworld.yaml with one to five values replaced (by hostile values, the wrong
    type, or a value copied from elsewhere in the spec), deleted, duplicated or wrapped; maybe
    a key line given twice; dumped as YAML."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 5))):
        paths = list(_paths(data))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(data, path), path[-1]
        op = draw(st.sampled_from(["replace", "replace", "delete", "duplicate", "copy", "wrap"]))
        if op == "replace":
            parent[last] = draw(values)
        elif op == "delete":
            del parent[last]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        elif op == "duplicate" and isinstance(parent[last], list):
            parent[last] = parent[last] * draw(st.sampled_from([2, 3, 100, 5000]))
        elif op == "copy":
            source = draw(st.sampled_from(paths))
            parent[last] = copy.deepcopy(_parent(data, source)[source[-1]])
        elif op == "wrap":
            parent[last] = draw(st.sampled_from([[parent[last]], {"value": parent[last]}]))
    if draw(st.booleans()):
        data["seeds"] = draw(st.sampled_from([1, 32, 1000, 6000, 100_000, True, 1.5, -3]))
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        text = _repeat_a_key(draw, text)
    return text.encode("utf-8")


def _repeat_a_key(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("-")]
    if not keyed:
        return text
    i = draw(st.sampled_from(keyed))
    changed = draw(st.sampled_from(["same", "other"]))
    line = lines[i] if changed == "same" else lines[i].split(":")[0] + ": 0.5\n"
    return "".join([*lines[: i + 1], line, *lines[i + 1 :]])


# --- text and bytes level -----------------------------------------------------------------------

BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE)


def _set_description(text: str, value: str) -> str:
    head, _, rest = text.partition("description: >")
    rest = rest.split("\nmodel:", 1)[1]
    return f"{head}description: {value}\nmodel:{rest}"


@st.composite
def hostile_texts(draw: st.DrawFn) -> bytes:
    """Bytes a spec file might hold: junk, other encodings, byte-order marks, byte edits of a
    valid spec, anchor bombs, deep nesting, keys twice, hostile literals, long strings and
    large expansions."""
    base = BASE_TEXT
    kind = draw(
        st.sampled_from(
            [
                "junk",
                "unicode",
                "edits",
                "bom",
                "encoded",
                "bomb",
                "deep",
                "dupkey",
                "literal",
                "long",
                "expansion",
            ]
        )
    )
    if kind == "junk":
        return draw(st.binary(max_size=4000))
    if kind == "unicode":
        return draw(st.text(max_size=2000)).encode("utf-8")
    if kind == "edits":
        data = bytearray(base.encode())
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["insert", "delete", "overwrite"]))
            chunk = draw(st.binary(min_size=1, max_size=8))
            if op == "insert":
                data[at:at] = chunk
            elif op == "delete":
                del data[at : at + len(chunk)]
            else:
                data[at : at + len(chunk)] = chunk
        return bytes(data)
    if kind == "bom":
        bom = draw(st.sampled_from(BOMS))
        encoding = draw(st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32-le"]))
        return bom + base.encode(encoding)
    if kind == "encoded":
        text = _set_description(base, draw(st.sampled_from(["café", "naïve ✓", "Ω"])))
        encoding = draw(st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-32", "utf-8"]))
        return text.encode(encoding, "replace")
    if kind == "bomb":
        width, levels = draw(st.integers(2, 12)), draw(st.integers(1, 12))
        lines = ["x0: &x0 [lol, lol]"]
        lines += [
            f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * width)}]" for i in range(1, levels + 1)
        ]
        bomb = "\n".join(lines) + "\n"
        target = draw(st.sampled_from(["top", "description", "terms"]))
        if target == "top":
            return (bomb + base).encode()
        if target == "description":
            return (bomb + _set_description(base, f"*x{levels}")).encode()
        return (bomb + base.replace("terms: [nurse,", f"terms: [*x{levels}, nurse,")).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 5000))
        style = draw(st.sampled_from(["flow-list", "flow-map", "block"]))
        if style == "flow-list":
            value = "[" * depth + "x" + "]" * depth
        elif style == "flow-map":
            value = "{a: " * depth + "x" + "}" * depth
        else:
            value = "\n" + "".join("  " * (i + 1) + "- \n" for i in range(min(depth, 400)))
            value = value.rstrip() + " x"
        return _set_description(base, value).encode()
    if kind == "dupkey":
        return _repeat_a_key(draw, base).encode()
    if kind == "literal":
        literal = draw(st.sampled_from(HOSTILE_LITERALS))
        key = draw(
            st.sampled_from(
                [
                    "seeds: 32",
                    "batch_size: 64",
                    "steps: 10",
                    "guidance_scale: 4.0",
                    "resolution: 32",
                    "max: 0.5",
                    "max: 1",
                    "max_terms: 8",
                    "spec_version: 1",
                    "guidance: [1.0]",
                    "id: builtin:toyworld-biased",
                ]
            )
        )
        name = key.split(":")[0]
        return base.replace(key, f"{name}: {literal}", 1).encode()
    if kind == "long":
        size = draw(st.sampled_from([1_000, 100_000, 900_000, 1_100_000]))
        char = draw(st.sampled_from(["x", "é", "𝔘", " "]))
        value = '"' + char * (size // len(char.encode())) + '"'
        return _set_description(base, value).encode()
    # a large expansion: many terms, templates and seeds
    terms = draw(st.integers(1, 5000))
    templates = draw(st.integers(1, 40))
    seeds = draw(st.integers(1, 100_000))
    text = base.replace("seeds: 32", f"seeds: {seeds}")
    listed = ", ".join(f"t{i}" for i in range(terms))
    text = text.replace(
        "terms: [nurse, teacher, chef, doctor, farmer, builder, pilot, firefighter]",
        f"terms: [{listed}]",
    )
    forms = ", ".join(f'"form {i} of a {{term}}"' for i in range(templates))
    text = text.replace(
        'templates: ["a photo of a {term}", "a picture of a {term}"]\n    terms',
        f"templates: [{forms}]\n    terms",
    )
    return text.encode()


specs = st.one_of(hostile_texts(), mutated_specs())
"""Every generated spec, as the bytes of a file."""


__all__ = ["Outcome", "hostile_texts", "mutated_specs", "peak_rss", "read_like_plan", "specs"]
