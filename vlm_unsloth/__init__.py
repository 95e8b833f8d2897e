"""vlm-unsloth."""
