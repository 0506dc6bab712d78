"""The metrics expert: causal LM over rendered metric series (digits split); shape and description tasks."""
