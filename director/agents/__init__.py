"""Agents: toolkits the actors use (sandboxed code, guardrails, queries, knowledge base)."""
