"""``--trajectory`` along a diffusers pipeline's own loop: what observing it costs against the pipeline alone.

A Flux-shaped pipeline (2 double + 4 single blocks, width 256, 32x32 latents = 256 image tokens, 32 text
tokens; tiny random CLIP and T5 with a word-level tokenizer) is assembled here, then, for the same prompts,
seeds and steps (one pipeline call per sample, as the trajectory makes them), the median process CPU time
(all threads; steadier than wall time on a shared machine) of

* ``pipeline``        the pipeline's own calls, nothing attached;
* ``trajectory``      the trajectory unit without the cache error: every call recorded by the block taps, the
                      step changes of every block, and the conditional reference call (text encoding only);
* ``+cache_error``    the same with the causal cache error (one more transformer call per block and step);
* ``cache-eval``      ``dardiag cache-eval``'s evaluation of one setting (FirstBlockCache, threshold 0.1): the
                      uncached and the cached call of every sample with its hooks counting blocks and
                      attentions, final latents compared; against ``calls``, the same two pipeline calls
                      per sample with the same diffusers hook and nothing of dardiag's.

Targets: trajectory / pipeline <= 1.15 and cache-eval / calls <= 1.05; the cache error's multiple is stated,
not targeted (it is one extra forward per block: about D + 1 forwards per step for D blocks).

    python benchmarks/bench_pipeline_trajectory.py                  # about a minute on 2 quiet cores
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

WORDS = "a photo of cat dog red blue house tree under the sky".split()


def _tokenizer(max_length: int):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                                eos_token="</s>", model_max_length=max_length)


def build(folder: Path) -> Path:
    import diffusers
    import transformers

    torch.manual_seed(0)
    n = len(WORDS) + 3
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=n, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, eos_token_id=2, pad_token_id=0, bos_token_id=2)).eval()
    t5 = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=n, d_model=128, d_ff=256, d_kv=64, num_layers=1, num_heads=2, pad_token_id=0)).eval()
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=64, num_attention_heads=4,
        joint_attention_dim=128, pooled_projection_dim=64, guidance_embeds=True, axes_dims_rope=(16, 24, 24))
    pipe = diffusers.FluxPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=clip,
                                  tokenizer=_tokenizer(77), text_encoder_2=t5, tokenizer_2=_tokenizer(512),
                                  transformer=transformer.eval())
    pipe.save_pretrained(folder)
    return folder


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dardiag.adapters.open import open_subject
    from dardiag.engine.config import Analyses, ProfileConfig
    from dardiag.engine.inputs import make_inputs
    from dardiag.savings.pipeline_trajectory import pipeline_job
    from dardiag.pipelines.options import PipelineOptions, attach_pipelines

    prompts = ("a photo of a cat", "a red house under the sky", "blue dog", "a tree")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp) / "flux-shaped")
        subject = open_subject(str(folder))
        options = PipelineOptions(prompts=prompts, height=256, width=256, call={"max_sequence_length": 32})
        attach_pipelines([subject], options, needed=True, seed=0, steps=args.steps, guidance=None, device="cpu",
                         dtype=torch.float32)
        ps = subject.pipeline
        inputs = make_inputs(None, subject, args.samples, 0)

        def pipeline() -> None:
            for j in range(args.samples):
                ps.call([j], args.steps)

        def trajectory(cache: bool):
            config = ProfileConfig(samples=args.samples, trajectory_steps=args.steps, noise_levels=[0.5],
                                   analyses=Analyses(trajectory=True, cache_error=cache))
            job = pipeline_job(subject, inputs, config, "cpu")

            def run() -> None:
                col = job.collector()
                for sl in job.chunks:
                    job.run(col, sl, lambda: None)
            return run

        import diffusers

        from dardiag.savings.evaluate import Setting, evaluate

        def calls() -> None:  # what cache-eval runs, with nothing of dardiag's around it
            for j in range(args.samples):
                ps.call([j], args.steps)
                subject.model.enable_cache(diffusers.FirstBlockCacheConfig(threshold=0.1))
                ps.call([j], args.steps)
                subject.model.disable_cache()

        def cache_eval() -> None:
            evaluate(subject, [Setting("firstblock", 0.1)], samples=args.samples, steps=args.steps)

        cases = {"pipeline": pipeline, "trajectory": trajectory(False), "+cache_error": trajectory(True),
                 "calls": calls, "cache-eval": cache_eval}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeats):
            for name, fn in cases.items():  # interleaved: a busy spell hits every case alike
                start = time.process_time()
                fn()
                times[name].append(time.process_time() - start)
        import dardiag
        from dardiag.savings.calibrate import METHODS, calibrate

        run = dardiag.profile(str(folder), samples=args.samples, trajectory_steps=args.steps, noise_levels=[0.5],
                              batch_size=args.samples, device="cpu", prompts=prompts, height=256, width=256,
                              call={"max_sequence_length": 32},
                              analyses=Analyses(cka=False, probe=False, outliers=False, trajectory=True))
        start = time.perf_counter()
        for method in METHODS:
            calibrate(run, method, computed=max(1, args.steps // 2))
        calibration = (time.perf_counter() - start) / len(METHODS)
    base = statistics.median(times["pipeline"])
    depth = subject.spec.depth
    print(f"Flux-shaped pipeline, {depth} blocks, 256 image + 32 text tokens, {args.samples} samples x "
          f"{args.steps} steps, {args.threads} thread(s), median of {args.repeats} (process CPU time)")
    for name, ts in times.items():
        med = statistics.median(ts)
        against = ("calls", statistics.median(times["calls"])) if name == "cache-eval" else ("the pipeline", base)
        print(f"  {name:14s} {med:7.2f} s   {med / against[1]:5.2f}x {against[0]}")
    print(f"  calibrate      {calibration:7.3f} s per method, from the trajectory run (wall time)")


if __name__ == "__main__":
    main()
