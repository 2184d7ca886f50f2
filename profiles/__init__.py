"""Measured step-time profiles shipped with blockctl (installed as ``blockctl_profiles``)."""
