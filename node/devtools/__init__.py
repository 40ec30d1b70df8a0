"""Development tools: a federation on one machine, synthetic data, and `shuqiao demo`.

May import: node.keys and node.storage (it starts real `shuqiao serve` processes; it never imports the server)."""
