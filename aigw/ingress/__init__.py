"""Client-side API formats: validation of canonical (OpenAI) requests and the
Anthropic Messages <-> canonical translation."""
