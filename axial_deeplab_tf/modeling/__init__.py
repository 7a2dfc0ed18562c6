"""Backbones, decoders, heads and full models; the zoo lives in `registry`."""
