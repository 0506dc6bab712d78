"""The logs expert: causal LM over log lines; tasks on templates, severity and what changed."""
