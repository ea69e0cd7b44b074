"""The `ingle` command line: typer commands that convert arguments in, call the engine, and print results."""
