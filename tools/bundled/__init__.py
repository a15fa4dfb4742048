"""Training data and recipes for mmsearch's bundled offline default model."""
