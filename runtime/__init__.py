"""What every process shares, apart from the product's logic: settings, logging, the Temporal
connection (TLS, API key, payload encryption), the worker's health and metrics endpoints, and the
payload codec with its HTTP server for the Temporal UI."""
