"""The Shuqiao node: config, identity, storage, datasets, gRPC server and client, CLI."""
