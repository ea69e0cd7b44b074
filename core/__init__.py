"""The engine: model store, sources, runtime and scheduler. Imports nothing else of ours."""
