"""Names of the anomaly part's tables, in a module without torch so readers (the agent's tools) stay light."""

ANOMALY_TABLE = "anomalies"
