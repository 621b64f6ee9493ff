"""Verification checks (see linflow.verification); filled by the module that owns this result."""
