"""The language server: inline and classic code completion from the local model (pygls)."""
