"""The passes after extraction that sample the pipeline again for an analysis.

* :mod:`auditkit.passes.guidance`: the guidance sweep (the captioned concept units again at
  other guidance scales, read by the same captioner).
* :mod:`auditkit.passes.causal`: the causal check (concept prompts steered along each axis's
  direction, read by the captioner).
* :mod:`auditkit.passes.discovery`: open-vocabulary discovery (terms mined from the captions,
  extracted as prompts of their own, ranked).
* :mod:`auditkit.passes.cost`: what the captioning stage and these passes will sample, for
  ``auditkit plan``.

A pass runs the pipeline only through :class:`auditkit.sampling.Sampler`, reads images only
through the caption stage's captioners and chunk store (:mod:`auditkit.caption`), and computes
only through :mod:`auditkit.analyze`, where the analysis of each pass lives with its prose
(:mod:`auditkit.analyze.causal`, :mod:`auditkit.analyze.discovery`,
:mod:`auditkit.analyze.guidance`). Imports point one way: ``passes`` -> ``analyze``,
``caption``, ``sampling`` -> ``extract``; none of those imports ``passes``, and ``analyze`` and
``caption`` do not import each other.
"""
