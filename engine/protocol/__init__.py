"""Wire formats at the edges: OpenAI chat-completions and Anthropic messages, both directions."""
