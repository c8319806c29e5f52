"""Studies built on the methods: the paper's ablation grid (``ablate``), the fusion
robustness grid (``robustness``), the MAVAD scene protocol (``scenes``) and the demo."""
