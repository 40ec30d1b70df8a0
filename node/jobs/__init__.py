"""Operator jobs over files: an applicant list in, a result file out; and batch jobs of the
service API, queued, run by worker threads of `shuqiao serve`, kept and expired (queue.py).

May import: node.rules and the layers below it."""
