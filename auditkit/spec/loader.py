"""Read an audit spec from YAML, reporting every problem with its YAML path and line."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from auditkit.errors import SpecError, UsageError
from auditkit.spec._yaml import MAX_SPEC_BYTES, check_size, decode_spec, read_yaml
from auditkit.spec.audit import SPEC_VERSION, AuditSpec
from auditkit.spec.libraries import expand_libraries

MAX_PROBLEMS = 50
"""Most problems one error lists (the count of the rest follows them)."""

Check = Callable[[AuditSpec], list[tuple[tuple[str | int, ...], str]]]
"""A check the layers above the spec add (``auditkit.analyses.checks.spec_problems``: the
analysis and gate-metric names only the slices know): (YAML path, message) per problem."""


def load_spec(path: str | Path, *, check: Check | None = None) -> AuditSpec:
    """Load and validate the spec at ``path``; raise :class:`SpecError` listing all problems
    (with ``check``, its problems too, each with its line)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"Spec file {str(path)!r} does not exist or is not a file.",
            hint="pass the path of an audit spec YAML file (see audits/ for examples).",
        )
    try:
        check_size(path.stat().st_size, source=str(path))
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise UsageError(
            f"Spec file {str(path)!r} cannot be read: {exc.strerror or exc}.",
            hint="check the file's permissions, or pass another spec.",
        ) from None
    text = decode_spec(data, source=str(path))
    return parse_spec(text, source=str(path), base_dir=path.parent, check=check)


def parse_spec(
    text: str, *, source: str = "spec", base_dir: Path | None = None, check: Check | None = None
) -> AuditSpec:
    """Validate spec ``text``; relative local model paths are resolved against ``base_dir``;
    ``check``'s problems are reported like the spec's own, with their lines. The YAML is read
    within fixed bounds (:mod:`auditkit.spec._yaml`: size, nesting, values, no key twice) and
    validated strictly: a boolean is not a number, a number is finite."""
    data, root = read_yaml(text, source=source)
    if not isinstance(data, dict):
        raise SpecError(
            ["the top level must be a mapping of keys (spec_version, name, model, ...)"],
            source=source,
        )
    version = data.get("spec_version")
    if isinstance(version, int) and version > SPEC_VERSION:
        raise SpecError(
            [
                f"spec_version {version} is newer than this auditkit understands "
                f"(up to {SPEC_VERSION})"
            ],
            source=source,
            hint="upgrade auditkit (pip install -U auditkit).",
        )
    data, path_problems = _resolve_model_path(data, base_dir)
    data, library_problems = expand_libraries(data)
    problems = [
        _locate({"loc": loc, "msg": msg, "type": "path"}, root)
        for loc, msg in (*path_problems, *library_problems)
    ]
    try:
        spec = AuditSpec.model_validate(data, strict=True)
    except ValidationError as exc:
        # an unexpandable library entry is reported once, by the expansion, not again as a
        # concept set or axis that lacks its keys
        failed = {loc[:2] for loc, _ in library_problems}
        errors = [err for err in exc.errors() if tuple(err["loc"][:2]) not in failed]
        problems += dict.fromkeys(_locate(err, root) for err in errors[:MAX_PROBLEMS])
        if len(errors) > MAX_PROBLEMS:
            problems.append(f"... and {len(errors) - MAX_PROBLEMS:,} more problems")
        raise SpecError(problems, source=source) from None
    if problems:
        raise SpecError(problems, source=source)
    found = check(spec) if check is not None else []
    if found:
        problems = [_locate({"loc": loc, "msg": msg, "type": "check"}, root) for loc, msg in found]
        raise SpecError(problems, source=source)
    return spec


def format_path(loc: tuple[str | int, ...]) -> str:
    """A YAML path as problems show it: ``gates[0].metric``."""
    return _format_path([str(part) for part in loc])


PATH_FIELDS: tuple[tuple[str, ...], ...] = (("model", "id"), ("captions", "captioner", "id"))
"""Every spec field that may name a local folder (a model's, a captioner's; a custom reader's
``id`` always does)."""
FOLDER_FIELDS: tuple[tuple[str, ...], ...] = (
    ("captions", "calibration", "folder"),
    ("grounding", "images", "folder"),
)
"""Every spec field that always names a local folder (never a hub id): labelled images."""


def _resolve_model_path(
    data: dict[str, Any], base_dir: Path | None
) -> tuple[dict[str, Any], list[tuple[tuple[str | int, ...], str]]]:
    """``data`` with each local folder of :data:`PATH_FIELDS` made absolute against
    ``base_dir``, and the problems of those that cannot be: a relative path that leaves the
    spec's folder (only an absolute path may name a folder elsewhere), a ``~user`` that is no
    user here."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for where in (*PATH_FIELDS, *FOLDER_FIELDS):
        parents = [data]
        for key in where[:-1]:
            child = parents[-1].get(key)
            if not isinstance(child, dict):
                break
            parents.append(child)
        else:
            value = parents[-1].get(where[-1])
            if not isinstance(value, str) or "\0" in value:
                continue  # the model refuses it, located
            # a custom reader's folder is never a hub id (it holds the adapter's code)
            custom = (
                where == ("captions", "captioner", "id") and parents[-1].get("kind") == "custom"
            )
            try:
                resolved = _local_folder(value, base_dir, local=where in FOLDER_FIELDS or custom)
            except ValueError as exc:
                problems.append((where, str(exc)))
                continue
            if resolved is None:
                continue
            updated: Any = resolved
            for parent, key in zip(reversed(parents), reversed(where), strict=False):
                updated = {**parent, key: updated}
            data = updated
    return data, problems


def _local_folder(value: str, base_dir: Path | None, *, local: bool = False) -> str | None:
    """The absolute folder ``value`` names, None when it names no local path (a hub id,
    ``builtin:...``; with ``local``, every value names a local path) or when there is no spec
    folder to resolve it against; ValueError when a relative path leaves the spec's folder or
    ``~`` cannot be expanded."""
    parts = value.replace("\\", "/").split("/")
    if value.startswith("~"):
        try:
            expanded = Path(value).expanduser().resolve()
        except (RuntimeError, KeyError, OSError) as exc:
            user = parts[0]
            raise ValueError(
                f"cannot expand {user!r} ({exc}): give the folder's absolute path"
            ) from None
        return str(expanded) if base_dir is not None else None
    if value.startswith("/"):
        return str(Path(value).resolve()) if base_dir is not None else None
    if not local and not value.startswith(".") and ".." not in parts:
        return None  # a hub id
    inside = os.path.normpath(value)
    if inside == ".." or inside.startswith(("../", "..\\")) or os.path.isabs(inside):
        raise ValueError(
            f"the relative path {value!r} leads outside the spec's folder; a relative path "
            "must stay within it (give an absolute path to name a folder elsewhere)"
        )
    if base_dir is None:
        return None
    try:
        return str((base_dir / value).resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise ValueError(f"cannot resolve {value!r}: {exc}") from None


def _locate(err: Any, root: yaml.Node | None) -> str:
    loc = tuple(err["loc"])
    node, depth = _walk(root, loc)
    # pydantic adds the name of a union member ('int', 'list[int]') to the path: hide it.
    shown = [str(p) for p in loc[:depth]] if depth < len(loc) else [str(p) for p in loc]
    path = _format_path(shown) or "(top level)"
    line = f"line {node.start_mark.line + 1}" if node is not None else "line ?"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}" + _did_you_mean(loc, root)
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{path} ({line}): {msg}"


def _walk(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[yaml.Node | None, int]:
    """Follow ``loc`` through the YAML node tree; return the node that names the deepest
    matching location (a mapping key, so a block value is reported on its key's line) and
    the depth reached."""
    node = root
    shown = root
    depth = 0
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child, shown = value, key
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = shown = node.value[part]
        if child is None:
            break
        node, depth = child, depth + 1
    return shown, depth


def _did_you_mean(loc: tuple[Any, ...], root: yaml.Node | None) -> str:
    import difflib

    owner: Any = AuditSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = owner.model_fields.get(str(part)) if hasattr(owner, "model_fields") else None
        if field is None:
            return ""
        owner = _model_of(field.annotation)
        if owner is None:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _model_of(annotation: Any) -> Any:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _format_path(parts: list[str]) -> str:
    out = ""
    for part in parts:
        part = part if part.isprintable() else repr(part)  # a key with a control character
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


_LATE_DEFAULTS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("captions", "discovery"), None),
    (("captions", "causal"), None),
    (("captions", "reference"), {}),
    (("captions", "guidance"), []),
    (("captions", "exemplars"), {"seeds": 4, "size": 96, "format": "webp", "quality": 80}),
    (("crossings",), []),
    (("gates",), []),
    (("report", "paper"), "a4"),
    (("report", "image_budget_mb"), 4.0),
    (("statistics", "alpha"), 0.05),
    (("statistics", "null_model"), None),
    (("statistics", "rule"), "min_effect"),
    (("statistics", "min_effect"), 0.3),
    (("statistics", "resampling"), "hierarchical"),
    (("statistics", "interval"), "centred"),
    (("statistics", "effect"), "auto"),
    (("statistics", "min_position"), 0.2),
    (("probe", "tokens"), "pooled"),
    (("probe", "per_step_h"), "all"),
    (("probe", "unit_budget_mb"), 0.5),
    (("model", "allow_pickle"), False),
    (("captions", "calibration"), None),
    (("captions", "captioner", "misread"), None),
    (("captions", "captioner", "adapter"), None),
    (("grounding",), None),
    (("grounding", "adjust_for"), None),
    (("grounding", "noise_seed"), 0),
    (("libraries",), []),
)
"""Keys added to the spec format after its first release, with their defaults. The spec hash
is taken of a form that leaves each out while it is at this default, so adding a key left the
hash of every earlier spec unchanged. A new key with a default joins this list (its default
written out here, not read from the model, so a later change of default cannot move a hash)."""


def _resolved(spec: AuditSpec) -> dict[str, Any]:
    """Every effective value of the spec, defaults included (an absent ``captions`` section is
    written as null: no captioning)."""
    return spec.model_dump(mode="json")


def _hash_form(spec: AuditSpec) -> dict[str, Any]:
    """What the spec hash is taken of: the resolved spec less the keys added after the first
    release that are still at their defaults (:data:`_LATE_DEFAULTS`), and less ``captions``
    when absent (itself a later addition). This is the form spec.yaml had before it recorded
    every value, so the hash of a spec, and of a run made before, is unchanged."""
    data = _resolved(spec)
    data.pop("execution", None)  # where it runs, not what it computes
    probe = data.get("probe") or {}
    # 'auto' storage is resolved against the model before a run hashes its spec; unresolved,
    # it hashes as what it stores when nothing resolves it (the layout before 'auto' existed)
    if probe.get("store_dtype") == "auto":
        probe["store_dtype"] = "float32"
    if probe.get("per_step_h") == "auto":
        probe["per_step_h"] = "all"
    if data.get("captions") is None:
        data.pop("captions", None)
    for axis in data.get("axes") or []:
        if axis.get("qualifiers") is None:
            axis.pop("qualifiers", None)  # a later addition, at its default
    for path, default in _LATE_DEFAULTS:
        parent = data
        for key in path[:-1]:
            parent = parent.get(key) or {}
        if path[-1] in parent and parent[path[-1]] == default:
            del parent[path[-1]]
    return data


def spec_hash(spec: AuditSpec) -> str:
    """sha256 of the canonical JSON of the spec's hash form (:func:`_hash_form`): defaults
    filled in, except the later additions still at their defaults."""
    canonical = json.dumps(_hash_form(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def dump_spec(spec: AuditSpec) -> str:
    """The resolved spec as YAML: every effective value, defaults included, so a run directory
    records what it was run with (``statistics.alpha`` too when the spec left it out)."""
    return yaml.safe_dump(_resolved(spec), sort_keys=False, allow_unicode=True)


def load_run_spec(run_dir: str | Path) -> AuditSpec:
    """The spec a run directory was made with (its ``spec.yaml``)."""
    from auditkit.errors import UsageError
    from auditkit.rundir import RunDir

    run = RunDir(run_dir)
    path = run.spec
    if not path.is_file():
        raise UsageError(
            f"{str(run_dir)!r} is not an auditkit run directory (no spec.yaml in it).",
            hint="pass the folder given to 'auditkit run --out'.",
        )
    run.read_checked(path)  # a spec.yaml changed after the run sealed it is refused
    return load_spec(path)
