"""CDC's latents ↔ bytes (docs/design.md §4c): the hyperprior's two entropy-coded streams.

Below the pipelines because two users need it: the CDC pipeline, and the learned base codec
(codecs/learned.py) through which DIRAC enhances CDC's mean decode. Everything that selects a
coding table is integer arithmetic on integers the stream holds (models/cdc.py's fixed-point
h_s, entropy_models.py's integer tables), so a decoder anywhere reads exactly the encoder's ŷ.
"""

from __future__ import annotations

import numpy as np
import torch

from ..entropy_models import GaussianConditional, decode_symbols, encode_symbols, gaussian_tables


def _z_table_ids(shape) -> np.ndarray:
    c, h, w = shape
    return np.repeat(np.arange(c, dtype=np.int64), h * w)


def hyper_params(model, z_int: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ in units 2^-frac_bits_a, table index) per element of y, from integer ẑ [1, Cz, h, w]."""
    mean_i, t_i = model.h_s.forward_int(z_int)
    return mean_i, GaussianConditional.indices_from_fixed(t_i, model.config.frac_bits_a)


def encode_latents(model, y: torch.Tensor) -> tuple[bytes, bytes, torch.Tensor]:
    """(ẑ stream, ŷ stream, ŷ) for a gained latent y [1, M, h, w]."""
    if not torch.isfinite(y).all():
        raise ValueError("the CDC encoder produced a non-finite latent (broken model weights?)")
    z = model.h_a(y)
    z_int = torch.round(z).to(torch.int64)
    z_stream = encode_symbols(z_int.numpy().reshape(-1), _z_table_ids(z_int.shape[1:]), model.prior_z.tables())
    mean_i, idx = hyper_params(model, z_int)
    mu = mean_i.double() / (1 << model.config.frac_bits_a)
    q = torch.round(y.double() - mu).to(torch.int64)
    y_stream = encode_symbols(q.numpy().reshape(-1), idx.numpy().reshape(-1), gaussian_tables())
    return z_stream, y_stream, (q.double() + mu).float()


def decode_latents(model, z_stream: bytes, y_stream: bytes, height: int, width: int) -> torch.Tensor:
    """ŷ [1, M, h, w] from the two streams (FormatError if either is not what an encoder writes)."""
    from .cdc import CDCModel

    z_shape, y_shape = CDCModel.latent_shapes(height, width, model.config)
    z_vals = decode_symbols(z_stream, _z_table_ids(z_shape), model.prior_z.tables())
    z_int = torch.from_numpy(z_vals).reshape(1, *z_shape)
    mean_i, idx = hyper_params(model, z_int)
    q = decode_symbols(y_stream, idx.numpy().reshape(-1), gaussian_tables())
    mu = mean_i.double() / (1 << model.config.frac_bits_a)
    return (torch.from_numpy(q).reshape(1, *y_shape).double() + mu).float()


__all__ = ["decode_latents", "encode_latents", "hyper_params"]
