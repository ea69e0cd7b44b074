"""Fakes of remote platforms the tests talk to over real loopback sockets."""
