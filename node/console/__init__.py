"""The web console: server-rendered pages (Jinja2) for fund-centre operators, agency admins and
auditors, on the node's HTTP listener under /console, zh-CN by default with an English switch.

Every page and button checks the same roles as the API (node/http/auth.py); every asset is
served by the node (static/); no inline script runs (the CSP forbids it).

May import: node.http, node.jobs, node.rules and below; never node.server or node.cli."""
