"""The HTTP API: Ollama-, OpenAI- and llama-server-compatible routes over the engine."""
