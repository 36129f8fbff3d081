"""What a trained model is measured and drawn with: a model applied to whole sets of images
(``inference.py``), the test-set metrics (``metrics.py``, ``disentanglement.py``, with the
``classifier.py`` and ``morphometrics.py`` they judge by) gathered by ``measure.py``, the pictures
(``figures.py``), and how samples draw their latents (``samplers.py``, ``sampler=``). The commands
that use them are ``vae_lab.evaluate`` and ``vae_lab.generate``; training uses them for its
pictures and its end-of-run measurement."""
