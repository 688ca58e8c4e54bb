"""Studies of how the model behaves, not part of the product (not installed; run from a checkout)."""
