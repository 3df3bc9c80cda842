"""Reading a finished run: metrics (`evaluate`), sample quality (`quality`, with its feature
network in `classifier`), latent-space tools (`latent`) and the run report (`report`)."""
