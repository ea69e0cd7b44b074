"""The engine's outward faces: the HTTP API, its client, the command line and upstreams."""
