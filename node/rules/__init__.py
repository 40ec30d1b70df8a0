"""Multi-agency eligibility rules: the rule file (pydantic schema), the rule language, and the runner that
evaluates local terms first and asks each partner only about applicants they leave undecided.

May import: node.asker and below."""
