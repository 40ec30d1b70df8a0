"""The answering side (an agency's node): one module per query kind, thin gRPC servicers around protocols/ sessions
that move messages and apply policy; admission.py holds what every kind shares (header admission, the
query stream's record and refusals, driving a session).

May import: node.policy, node.datasets, node.runtime.context and below. Never node.asker, node.cli, node.server."""
