"""Latents of real images for ``dardiag profile --inputs``: a folder of images through the model's VAE.

``encode_folder`` is the library entry point; ``images`` finds, decodes and crops (DiT's preprocessing),
``vae`` opens a local diffusers AutoencoderKL and encodes, ``encode`` streams and writes the file.
"""

from dardiag.latents.encode import encode_folder

__all__ = ["encode_folder"]
