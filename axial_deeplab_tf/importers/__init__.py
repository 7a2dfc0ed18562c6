"""Importers of checkpoints published with the official codes.

Each importer maps every tensor of a foreign checkpoint onto a zoo model
through `common.TensorMapping` (every source tensor consumed, every target
variable set, shapes checked, nothing written on error) and writes a TF
checkpoint plus a gin file that rebuilds the model (`common.write_import`).
"""
