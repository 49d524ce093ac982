"""Where compute can be saved, measured: the room for everything about skipping and reusing blocks.

Measuring (the sweep runs them as units, ``dardiag.engine.units``):

* ``ablation``: each block skipped in turn at a noise level (``--ablation``);
* ``trajectory``: dardiag's own sampler observed step by step (``--trajectory`` on its DiT/SiT/REPA);
* ``pipeline_trajectory``: a diffusers pipeline's own loop observed, guidance branches apart, with what the
  caching methods calibrate on.

Acting on it:

* ``schedule``: a cache schedule (which (block, step) cells reuse) and dardiag's cached sampler;
* ``plan``: ``dardiag cache-plan``: a schedule from a trajectory run, applied and measured end to end;
* ``pipeline_cache``: a schedule applied inside a pipeline's own loop;
* ``evaluate``: ``dardiag cache-eval``: diffusers' cache hooks, cache-dit and dardiag's schedule run on a
  pipeline, speed against error.

Pure pandas, from the table alone: ``summary`` (does the caching signal agree with the causal error? does
"looks redundant" agree with "is removable"?) and ``calibrate`` (``dardiag calibrate``: MagCache, FirstBlockCache,
TeaCache, ... configurations with uncertainty). Block edits themselves are hooks: ``dardiag.hooks.edits``;
the figures are ``dardiag.plots.cache_map``, ``dardiag.plots.ablation`` and ``dardiag.plots.pareto``.
"""

from dardiag.savings.summary import ablation_summary, trajectory_summary

__all__ = ["ablation_summary", "trajectory_summary"]
