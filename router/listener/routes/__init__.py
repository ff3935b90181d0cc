"""The endpoints, one module per protocol (plus the protocol-neutral ones in info)."""
