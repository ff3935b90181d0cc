"""Decides where a request goes: rules, store, secrets, failover, the HTTP listener."""
