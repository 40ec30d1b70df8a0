"""Multi-agency eligibility rules: the rule language and the runner that asks partners.

May import: node.asker and below."""
