"""Cloud backends over httpx with retries (httpx-retries) and a circuit breaker (pybreaker)."""
