"""Model construction: the real packaged SmolLM2 checkpoint, tiny random models for tests, processors."""
