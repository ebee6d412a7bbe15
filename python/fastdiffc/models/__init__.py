"""Models: UNet, analytic Gaussian denoiser, base codecs, CDC transforms, weights registry."""
