"""The three methods, one folder each, and what their heads share.

- ``avarnet/``: AVAR-Net, supervised multi-class recognition (attention + multi-stage TCN);
  ``train`` (the training loop and recipes), ``run`` (the saved run), ``evaluate`` (clip
  metrics), ``stream_selection`` (cross-validated stream choice).
- ``baselines/``: the recurrent and transformer heads of AVAR-Net's Table 2, same interface,
  trained and evaluated by ``avarnet``.
- ``avaca/``: AVACA, weakly supervised detection from video labels (cross-attention,
  DMIL + center loss); ``mil`` trains any head with the same losses.
- ``autoencoder/``: the unsupervised audio-visual sequence autoencoder; its run is
  calibrated on held-out normal footage for files and streams.

Each folder has ``config.py`` (typed dataclasses with documented defaults), ``torch_model.py``
(plain ``nn.Module``), ``loss.py`` where the method has its own loss, ``train.py`` (with
``fit``), ``run.py``, ``evaluate.py`` (with ``evaluate``), ``options.py`` (its ``avar train
METHOD`` options and what they call) and a README mapping each part to its paper; one line
of ``table.py`` names it, and every command looks it up there. Shared here: ``heads.py`` (the
table of supervised heads and late fusion), ``streams.py`` (how the audio and video streams
enter a head) and ``config_base.py``. Methods never import ``serve``, ``experiments`` or
``cli``; ``avar.runs`` loads any method's run.
"""
