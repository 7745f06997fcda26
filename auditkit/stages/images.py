"""The stages that read images: captioning (of the units extraction did not read), the
guidance sweep, the causal check and discovery, each loading the pipeline only if something is
missing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.rundir import json_safe
from auditkit.stages.context import Stages

if TYPE_CHECKING:
    from auditkit.caption import Captioner
    from auditkit.caption.stage import CaptionReader


def spec_captioner(stages: Stages) -> tuple[Captioner, dict[str, Any]] | None:
    """The spec's captioner (loaded when it first reads) and its record, made once per run;
    None without a captions section."""
    from auditkit.caption import stage

    captions = stages.spec.captions
    if captions is None:
        return None
    if stages.captioner is None:
        captioner = stage.load_spec_captioner(captions.captioner, deferred=True)
        stages.captioner = (captioner, stage.captioner_record(captions.captioner, captioner))
        stages.update(captioner=stages.captioner[1])
    return stages.captioner


def caption_reader(stages: Stages) -> CaptionReader | None:
    """The captioning stage's reader of the images extraction decodes (the selected units not
    yet read), or None without a captions section."""
    from auditkit.caption.stage import CaptionedPass, CaptionReader

    made = spec_captioner(stages)
    if made is None:
        return None
    return CaptionReader(
        CaptionedPass(stages.spec, stages.plan, stages.run.captions, *made, stages.executor)
    )


def caption(stages: Stages) -> tuple[Captioner, dict[str, Any]] | None:
    """Caption the selected units extraction did not read; the pipeline is loaded only if
    some are missing.

    Returns the captioner and its record (for the guidance sweep and the causal check), or None
    without a captions section."""
    from auditkit.caption import stage

    spec = stages.spec
    made = spec_captioner(stages)
    if made is None or spec.captions is None:
        return None
    captioner, record = made
    if spec.captions.calibration is not None:
        from auditkit.passes.calibration import calibrate_run

        stages.current = "calibrate"
        stages.record(
            "calibrate",
            calibrate_run(spec, captioner, record, stages.run.captions),
            stages.executor.batches,
        )
        stages.current = "caption"
    # When extraction was already complete the manifest keeps the provenance of the run that
    # did it (same extraction fingerprint); where this pass ran is in stages.caption.
    stats, mark = stages.sample_and_read(stage.caption_images, captioner, record)
    stages.record("caption", stats.to_json(), mark, captioner_key=record["key"])
    return captioner, record


def guidance(stages: Stages, captioner: Captioner, record: dict[str, Any]) -> None:
    """The guidance sweep (captions.guidance); the pipeline is loaded only if some image at some
    scale is missing."""
    from auditkit.passes.guidance import run_guidance_sweep

    stats, mark = stages.sample_and_read(run_guidance_sweep, captioner, record)
    if stats["scales"]:
        stages.record("guidance", stats, mark)


def causal(stages: Stages, captioner: Captioner, record: dict[str, Any]) -> None:
    """The causal check (dose-response per axis); the pipeline is loaded only if some steered
    image is missing."""
    from auditkit.analyze.causal import read_causal
    from auditkit.extract.store import ActivationStore
    from auditkit.passes.causal import run_causal_check

    spec = stages.spec
    if spec.captions is None or spec.captions.causal is None:
        return
    store = ActivationStore(stages.run.activations)
    stats, mark = stages.sample_and_read(run_causal_check, captioner, record, store)
    axes = read_causal(stages.run.captions)["causal_axes"]
    keys = ("axis", "positive_group", "effect", "rho", "monotone", "slope")
    summary = [json_safe({k: row[k] for k in keys}) for row in axes.to_dict("records")]
    stages.record("causal", stats.to_json(), mark, captioner_key=record["key"], axes=summary)


def discover(stages: Stages) -> None:
    """Open-vocabulary discovery (results/discovery.parquet); the pipeline is loaded only if
    some term prompt's units are not in the activation store."""
    from auditkit.passes.discovery import run_discovery

    spec = stages.spec
    if spec.captions is None or spec.captions.discovery is None:
        return
    mark = stages.executor.batches
    stats = run_discovery(
        spec, stages.plan, stages.run_dir, pipeline=stages.executor,
        show_progress=stages.show_progress,
    )  # fmt: skip
    stages.record("discovery", stats.to_json(), mark)
