"""One node process (`shuqiao serve`): the gRPC server, HTTP listener, start checks and witnessing rounds.

May import: everything except node.cli and node.devtools."""
