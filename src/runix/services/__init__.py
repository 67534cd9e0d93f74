"""Use cases, one module per resource. The API routes, the dashboard and the workers all call these."""
