"""Sequence heads: each maps per-step feature sequences to per-step and per-clip class logits.

One folder per method (``avarnet/``, ...), each with ``config.py``, ``torch_model.py``, an
optional ``loss.py`` and a README that maps its parts to the paper.
"""
