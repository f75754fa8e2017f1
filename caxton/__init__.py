"""Caxton: a server that hosts WebAssembly agents and routes FIPA-ACL messages."""

__version__ = "0.1.0"
