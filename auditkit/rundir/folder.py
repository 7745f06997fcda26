"""The run directory: every path, and the one versioned reader and writer of each file.

``RunDir(path)`` is the only place that spells the run directory's layout (docs/run-directory.md):
other modules ask it for ``run.results``, ``run.table("lean")`` or ``run.write_table(...)``.
Readers refuse a file written by a newer auditkit (:class:`SchemaVersionError`, naming the file
and both versions), migrate an older one (:meth:`Registry.migrate`), and turn a missing or
malformed file into a :class:`UsageError` that names it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit.errors import UsageError
from auditkit.rundir import integrity, storage
from auditkit.rundir.manifest import Manifest
from auditkit.rundir.versioned import (
    check_version,
    load_json,
    newer_error,
    parquet_bytes,
    parquet_version,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class JsonFile:
    """A versioned JSON file of the run directory."""

    path: str
    kind: str
    version: int


JSON_FILES: dict[str, JsonFile] = {
    "manifest": JsonFile("manifest.json", "auditkit.manifest", 1),
    "plan": JsonFile("plan.json", "auditkit.plan", 1),
    "summary": JsonFile("results/summary.json", "auditkit.summary", 1),
    "gates": JsonFile("results/gates.json", "auditkit.gates", 1),
    "captioner": JsonFile("captions/captioner.json", "auditkit.captioner", 1),
    "calibration": JsonFile("captions/calibration.json", "auditkit.calibration", 1),
}
"""Every versioned JSON file, by name."""


class RunDir:
    """One run directory. Paths are attributes; files are read and written through methods."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.spec = self.root / "spec.yaml"
        self.plan = self.root / "plan.json"
        self.manifest = self.root / "manifest.json"
        self.activations = self.root / "activations"
        self.captions = self.root / "captions"
        self.grounding = self.root / "grounding"
        self.grounding_activations = self.grounding / "activations"
        self.results = self.root / "results"
        self.report = self.root / "report"
        self.report_html = self.report / "report.html"
        self.report_pdf = self.report / "report.pdf"
        self.model_card = self.report / "model-card.md"
        self.summary = self.results / "summary.json"
        self.gates = self.results / "gates.json"
        self.junit = self.results / "junit.xml"
        self.lock_file = self.root / ".lock"
        self._sealed: dict[str, str] | None = None

    @classmethod
    def of_folder(cls, folder: str | Path) -> RunDir:
        """The run directory holding ``folder`` (its ``captions/`` or ``results/``)."""
        return cls(Path(folder).parent)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # --- tables -------------------------------------------------------------------------------

    def table_path(self, name: str) -> Path:
        """Where the registered table ``name`` lives."""
        from auditkit.rundir.columns import REGISTRY

        return self.root / REGISTRY[name].path

    def has_table(self, name: str) -> bool:
        return storage.exists(self.table_path(name))

    def has_json(self, name: str) -> bool:
        """Whether the versioned JSON file ``name`` exists."""
        return storage.exists(self.json_path(name))

    def write_table(
        self, name: str, frame: pd.DataFrame, meta: dict[str, str] | None = None
    ) -> Path:
        """Write a registered table, stamped with its schema version. Refuses a frame whose
        columns the registry does not declare, or that lacks a required one, so a table and its
        documentation cannot drift apart."""
        from auditkit.rundir.columns import REGISTRY

        table = REGISTRY[name]
        unknown = [c for c in frame.columns if c not in table.names]
        missing = [c for c in table.required if c not in frame.columns]
        if unknown or missing:
            raise ValueError(
                f"{table.path}: columns not in the table registry {unknown}, required columns "
                f"missing {missing} (declare them in auditkit/rundir/tables.yaml, or in the "
                "tables.yaml file of the analysis slice that declares the table)."
            )
        path = self.root / table.path
        storage.write_bytes_atomic(path, parquet_bytes(frame, table.version, meta))
        return path

    def table(self, name: str, *, required: bool = False) -> pd.DataFrame | None:
        """A registered table, migrated to this auditkit's version; None when the run did not
        write it (a UsageError when ``required``)."""
        from auditkit.rundir.columns import REGISTRY

        table = REGISTRY[name]
        path = self.root / table.path
        if not storage.exists(path):
            if required:
                raise UsageError(
                    f"{path} is missing: {self.root} is not a finished auditkit run with a "
                    f"{name} table.",
                    hint="point at the folder given to 'auditkit run --out', after it finished.",
                )
            return None
        version = parquet_version(path)
        if version > table.version:
            raise newer_error(path, version, table.version)
        import pandas as pd

        frame = pd.read_parquet(io.BytesIO(self.read_checked(path)))
        frame = REGISTRY.migrate(name, frame, version)
        absent = [c for c in table.required if c not in frame.columns]
        if absent:
            raise UsageError(
                f"{path} lacks the columns {absent} that schema version {table.version} requires.",
                hint="rerun the analysis with this auditkit to regenerate the result tables.",
            )
        return frame

    def table_file(self, name: str) -> Path | None:
        """The file of the registered table ``name`` when a query engine may read it as it is
        (DuckDB's ``read_parquet``): on this machine (not a remote run's working copy), at
        this auditkit's version of the table (no migration to apply) and, in a sealed run,
        matching its checksum. None otherwise: read it through :meth:`table` instead."""
        from auditkit.rundir.columns import REGISTRY

        path = self.table_path(name)
        if not storage.exists(path) or storage.is_remote(path):
            return None
        if parquet_version(path) != REGISTRY[name].version:
            return None
        self.read_checked(path)
        return path

    def tables(self, names: list[str] | None = None) -> dict[str, pd.DataFrame]:
        """Every registered table of ``results/`` the run wrote (or those of ``names``)."""
        from auditkit.rundir.columns import REGISTRY

        wanted = names if names is not None else [t.name for t in REGISTRY.in_folder("results")]
        out = {}
        for name in wanted:
            frame = self.table(name)
            if frame is not None:
                out[name] = frame
        return out

    def results_hash(self) -> str:
        """A content hash of the result tables: sha256 over the sorted names and the sha256 of
        the bytes of every ``results/*.parquet``."""
        import hashlib

        digest = hashlib.sha256()
        for path in storage.listing(self.results, "*.parquet"):
            file_hash = hashlib.sha256(storage.read_bytes(path)).hexdigest()
            digest.update(path.name.encode() + b"\0" + file_hash.encode() + b"\n")
        return digest.hexdigest()

    # --- JSON files ---------------------------------------------------------------------------

    def json_path(self, name: str) -> Path:
        return self.root / JSON_FILES[name].path

    def read_json(self, name: str) -> dict[str, Any]:
        """A versioned JSON file by name (``manifest``, ``summary``, ``gates``, ``plan``,
        ``captioner``), checked for its kind and version."""
        spec = JSON_FILES[name]
        path = self.root / spec.path
        if name == "manifest":
            data = load_json(path)
            if not integrity.seal_matches(data):
                raise integrity.CorruptFile(
                    path,
                    "its content no longer matches the seal the run wrote (it was edited or "
                    "damaged after the run finished), so its provenance cannot be trusted",
                    fix="rerun 'auditkit run SPEC --out RUN_DIR' to write a true manifest "
                    "(finished units are not redone).",
                )
        else:
            if storage.exists(path):
                self.read_checked(path)
            data = load_json(path)
        check_version(data.get("schema_version"), spec.version, path)
        if data.get("kind", spec.kind) != spec.kind:
            raise UsageError(f"{path} has kind {data.get('kind')!r}, expected {spec.kind!r}.")
        return data

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.json_path(name)
        storage.write_json_atomic(path, payload)
        return path

    def read_manifest(self) -> Manifest:
        """The typed manifest (schema-checked)."""
        from pydantic import ValidationError

        data = self.read_json("manifest")
        try:
            return Manifest.model_validate(data)
        except ValidationError as exc:
            raise UsageError(f"{self.manifest} is not an auditkit manifest ({exc}).") from None

    def write_manifest(self, manifest: Manifest) -> Path:
        storage.write_json_atomic(self.manifest, manifest.to_json())
        self._sealed = None
        return self.manifest

    # --- the seal -----------------------------------------------------------------------------

    def seal(self, manifest: Manifest) -> Manifest:
        """Write ``manifest`` with the checksum of every sealed file and its own seal
        (:mod:`auditkit.rundir.integrity`); returns what was written."""
        sealed = manifest.evolve(files=integrity.file_digests(self.root), seal=None)
        data = sealed.to_json()
        sealed = sealed.evolve(seal=integrity.seal_of(data))
        self.write_manifest(sealed)
        return sealed

    def reseal(self) -> None:
        """Seal the finished run again after a command rewrote some of its files (the report,
        the model card, the gate files); a run that is not complete, or was never sealed (one
        written before runs were sealed), is left as it is."""
        manifest = self.read_manifest()
        if manifest.status == "complete" and manifest.seal is not None:
            self.seal(manifest)

    def sealed_files(self) -> dict[str, str]:
        """The checksums a complete, sealed manifest records (empty for an unfinished run or
        one written before runs were sealed)."""
        if self._sealed is None:
            self._sealed = {}
            if storage.exists(self.manifest):
                try:
                    data = load_json(self.manifest)
                except UsageError:
                    data = {}
                complete = data.get("status") == "complete" and data.get("seal")
                if complete and integrity.seal_matches(data):
                    self._sealed = dict(data.get("files") or {})
        return self._sealed

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def read_checked(self, path: Path) -> bytes:
        """A run file's bytes, checked against the seal's checksum when the run recorded one
        (a :class:`~auditkit.rundir.integrity.CorruptFile` naming the file otherwise)."""
        data = storage.read_bytes(path)
        try:
            expected = self.sealed_files().get(self.relative(path))
        except ValueError:  # not under this run directory
            expected = None
        if expected is not None and integrity.sha256_bytes(data) != expected:
            raise integrity.CorruptFile(
                path, "its bytes differ from the checksum recorded when the run finished"
            )
        return data

    def claim(self, given: str | Path) -> None:
        """Refuse, as ``--out``, anything auditkit may not write into: empty text, a file, or a
        non-empty folder that holds no run (auditkit would replace files of the same names
        there). A folder holding only auditkit's own files (a lock, temporaries, an activation
        store such as a layer sweep's) is a run folder."""
        if not str(given).strip():
            raise UsageError(
                "--out is empty: a run needs a folder of its own.",
                hint="give --out a new folder, e.g. --out runs/my-audit.",
            )
        root = self.root
        if root.exists() and not root.is_dir():
            raise UsageError(f"--out {str(root)!r} exists and is not a folder.")
        if not root.is_dir() or storage.exists(self.manifest):
            return
        store = self.activations
        own_store = (store / "index.parquet").is_file() or (store / "index-parts").is_dir()
        others = sorted(
            p.name
            for p in root.iterdir()
            if p.name not in integrity.UNSEALED_NAMES
            and not p.name.endswith(storage.TEMP_SUFFIX)
            and not (p == store and own_store)
        )
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise UsageError(
                f"--out {str(root)!r} is a folder that auditkit did not create (no "
                f"manifest.json; it holds {shown}). A run writes results/, captions/, report/ "
                "and more there and would replace files of the same names, so nothing was "
                "written.",
                hint="give --out a new or empty folder, or the folder of an earlier run to "
                "resume it.",
            )

    def set_aside_damaged(self, previous: Manifest) -> list[integrity.Problem]:
        """The files of the previous, sealed run (``previous``) whose bytes no longer match its
        seal, each moved aside as ``<name>.corrupt`` so that the stages write it again."""
        if previous.status != "complete" or not previous.files:
            return []
        found = integrity.damaged(self.root, previous.files)
        for problem in found:
            path = Path(problem.path)
            if path.is_file():
                path.replace(path.with_name(path.name + integrity.QUARANTINE_SUFFIX))
        return found

    def require_complete(self, what: str) -> Manifest:
        """The manifest of a complete, intact run; a UsageError naming why not otherwise (a
        failed or interrupted run's results may be stale)."""
        manifest = self.read_manifest()
        if manifest.status != "complete":
            stage = getattr(manifest, "failed_stage", None)
            where = f" in its {stage} stage" if stage else ""
            error = f": {manifest.error}" if manifest.error else ""
            raise UsageError(
                f"{self.root} is not a complete run (status {manifest.status!r}{where}{error}), "
                f"so its results may be stale or partial and {what} refuses to read them.",
                hint=f"rerun 'auditkit run SPEC --out {self.root}' to finish it (finished "
                "units are not redone).",
            )
        return manifest

    def files(self, folder: Path, pattern: str = "*") -> list[Path]:
        """The files of one of the run's folders matching ``pattern``, sorted."""
        return storage.listing(folder, pattern)

    def remove(self, *paths: Path) -> None:
        """Delete files of the run if they are there (a rerun's stale results)."""
        for path in paths:
            storage.remove(path)

    def is_finished(self) -> bool:
        """Whether the analysis has written its summary."""
        return storage.exists(self.summary)

    def require_finished(self, what: str = "this command") -> None:
        """A UsageError unless the run's analysis finished."""
        if not self.is_finished():
            raise UsageError(
                f"{str(self.root)!r} has no results/summary.json: not a finished auditkit run, "
                f"so {what} has nothing to read.",
                hint="run 'auditkit run SPEC --out DIR' to completion first.",
            )


def as_run_dir(run_dir: str | Path | RunDir) -> RunDir:
    """``run_dir`` as a :class:`RunDir` (a path is wrapped, a RunDir passes through)."""
    return run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
