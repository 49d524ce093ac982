"""Which table classes are checked against their diffusers pipeline's own call, and why the others are not.

``PIPELINES[class]``: the pipeline whose transformer call dardiag's call of the class reproduces (1e-5) at
an ordinary denoising step, assembled in tests/test_pipeline_parity.py from tiny components.
``NO_PIPELINE[class]``: why no pipeline can be assembled from tiny components for that class.
The README's coverage table shows both; the parity test fails for a class with neither.
"""

from __future__ import annotations

PIPELINES: dict[str, str] = {
    "DiTTransformer2DModel": "DiTPipeline",
    "PixArtTransformer2DModel": "PixArtAlphaPipeline",
    "SanaTransformer2DModel": "SanaPipeline",
    "HunyuanDiT2DModel": "HunyuanDiTPipeline",
    "Lumina2Transformer2DModel": "Lumina2Pipeline",
    "LuminaNextDiT2DModel": "LuminaPipeline",
    "PRXTransformer2DModel": "PRXPipeline",
    "BriaFibo2Transformer2DModel": "BriaFibo2Pipeline",
    "ZImageTransformer2DModel": "ZImagePipeline",
    "ErnieImageTransformer2DModel": "ErnieImagePipeline",
    "SD3Transformer2DModel": "StableDiffusion3Pipeline",
    "FluxTransformer2DModel": "FluxPipeline",
    "QwenImageTransformer2DModel": "QwenImagePipeline",
    "AuraFlowTransformer2DModel": "AuraFlowPipeline",
    "BriaTransformer2DModel": "BriaPipeline",
    "BriaFiboTransformer2DModel": "BriaFiboPipeline",
    "ChromaTransformer2DModel": "ChromaPipeline",
    "CogView3PlusTransformer2DModel": "CogView3PlusPipeline",
    "CogView4Transformer2DModel": "CogView4Pipeline",
    "Flux2Transformer2DModel": "Flux2Pipeline",
    "Flux3Transformer2DModel": "Flux3ModularPipeline",
    "GlmImageTransformer2DModel": "GlmImagePipeline",
    "HiDreamImageTransformer2DModel": "HiDreamImagePipeline",
    "HunyuanImageTransformer2DModel": "HunyuanImagePipeline",
    "Krea2Transformer2DModel": "Krea2Pipeline",
    "LongCatImageTransformer2DModel": "LongCatImagePipeline",
    "NucleusMoEImageTransformer2DModel": "NucleusMoEImagePipeline",
    "OvisImageTransformer2DModel": "OvisImagePipeline",
    "QwenImage21Transformer2DModel": "QwenImage21Pipeline",
    "WanTransformer3DModel": "WanPipeline",
    "AllegroTransformer3DModel": "AllegroPipeline",
    "CogVideoXTransformer3DModel": "CogVideoXPipeline",
    "LTXVideoTransformer3DModel": "LTXPipeline",
    "MochiTransformer3DModel": "MochiPipeline",
    "HunyuanVideoTransformer3DModel": "HunyuanVideoPipeline",
    "HunyuanVideo15Transformer3DModel": "HunyuanVideo15Pipeline",
    "EasyAnimateTransformer3DModel": "EasyAnimatePipeline",
    "CosmosTransformer3DModel": "Cosmos2_5_PredictBasePipeline",
    "SkyReelsV2Transformer3DModel": "SkyReelsV2DiffusionForcingPipeline",
    "AnyFlowTransformer3DModel": "AnyFlowPipeline",
    "AnyFlowFARTransformer3DModel": "AnyFlowFARPipeline",
    "HeliosTransformer3DModel": "HeliosPipeline",
    "JoyImageEditTransformer3DModel": "JoyImageEditPipeline",
    "JoyImageEditPlusTransformer3DModel": "JoyImageEditPlusPipeline",
    "Kandinsky5Transformer3DModel": "Kandinsky5T2VPipeline",
    "Kandinsky6Transformer3DModel": "Kandinsky6TI2VAPipeline",
    "MotifVideoTransformer3DModel": "MotifVideoPipeline",
    "SanaVideoTransformer3DModel": "SanaVideoPipeline",
    "LatteTransformer3DModel": "LattePipeline",
}

NO_PIPELINE: dict[str, str] = {
    "OmniGenTransformer2DModel": (
        "OmniGenPipeline's multimodal processor (its prompts become token ids) needs torchvision, which "
        "dardiag does not depend on"),
    "Ideogram4Transformer2DModel": (
        "Ideogram4Pipeline takes no prompt embeddings (its LLM text encoder runs inside) and needs its "
        "unconditional transformer and the FLUX.2 VAE's statistics"),
    "ConsisIDTransformer3DModel": (
        "ConsisIDPipeline needs opencv-python (face crops of its reference image), which dardiag does not "
        "depend on; it is image-to-video only"),
    "LTX2VideoTransformer3DModel": (
        "LTX2Pipeline denoises audio with the video: it needs its Gemma text connectors, audio VAE and "
        "vocoder"),
    "HunyuanVideoFramepackTransformer3DModel": (
        "HunyuanVideoFramepackPipeline is image-to-video only: it encodes a start image (VAE, SigLIP), which "
        "dardiag's call replaces with zeros"),
    "WanVACETransformer3DModel": (
        "WanVACEPipeline encodes its control video through the VAE (a blank one without a video): dardiag's "
        "zero control latents are no VAE's latents, so no pipeline call gives them"),
    "ChronoEditTransformer3DModel": (
        "ChronoEditPipeline edits an input image (VAE, CLIP), which dardiag's call replaces with zero "
        "condition channels"),
    "WanAnimateTransformer3DModel": (
        "WanAnimatePipeline animates a reference image from pose and face videos (VAE, CLIP); dardiag's call "
        "uses zero pose latents and a blank face"),
    "Kandinsky6SRTransformer3DModel": (
        "Kandinsky6SRPipeline super-resolves an input video through its own VAE; dardiag's call uses zero "
        "anchors"),
    "SanaWMTransformer3DModel": (
        "SanaWMPipeline starts from an image through the LTX-2 VAE; tests/test_sana_wm.py checks the call "
        "against the pipeline's stage-1 call"),
    "SanaWMLTX2RefinerTransformer3DModel": (
        "SanaWMLTX2Refiner refines a stage-1 video through the LTX-2 VAE; tests/test_sana_wm.py checks the "
        "call against its first chunk"),
    "WanAnimate2Transformer3DModel": (
        "only the modular WanAnimate2ModularPipeline, driven by a video and a reference image; "
        "tests/test_wan_animate_2.py checks the call against its segment steps"),
}
