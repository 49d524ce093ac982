"""A diffusers model's own pipeline as dardiag's sampler: generated inputs, conditioning exactly as the
pipeline's call encodes it, and its denoising loop observed (``--trajectory``), for any class of the table.

* ``door``: how dardiag's call of a class maps onto what its pipeline hands the transformer;
* (``dardiag.checkpoints.pipeline_dir`` opens the pipeline folder around the transformer dardiag holds);
* ``sampler``: :class:`PipelineSampler`, the pipeline's call with reproducible seeds;
* ``prompts``: a prompt file or the built-in list; ``options``: the run's pipeline options;
* ``generate``: ``dardiag generate`` (generated inputs to a file for ``--inputs``).
"""
