"""Shuqiao's cryptographic protocols: pure, synchronous, transport-free.

Each module turns bytes into bytes and is driven by known-answer vectors from the
standards it implements; randomness enters only at the public edge. Nothing here opens
sockets, files, databases or clocks, and nothing here imports ``node``.
"""
