"""One small module per method; each states only how it differs from the engine."""
