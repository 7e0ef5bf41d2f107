"""Deployment of trained runs: the streaming step with normalisation folded in, its export as ONNX and
StableHLO files with a manifest, and a service that streams many live cells (``docs/realtime.md``)."""
