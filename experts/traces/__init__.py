"""The traces expert: causal LM over rendered span trees; slow-path and error-source tasks."""
