"""One module per chat platform, each converting to and from the conversation core."""
