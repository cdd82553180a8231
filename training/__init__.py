"""Training loop, data pipeline, CLI and evaluation: composes graph, sampling and pinclip."""
