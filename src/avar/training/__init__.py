"""What every method's training and scoring shares, written once.

``run``: the run format and the one scoring interface (``FeatureRun``) and feature
normalisation; ``sequences``: windows and padding for training, ``predict`` and ``watch``;
``seeding``: one seed for Python, NumPy and PyTorch.
"""
