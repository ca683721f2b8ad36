"""Integrations with third-party evaluation harnesses. Each subpackage imports its harness lazily, so `emloc`
itself never needs them installed (lmms-eval: the `[eval]` extra plus `pip install --no-deps lmms-eval==0.7.3`,
both done by `make install`)."""
