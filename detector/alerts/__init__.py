"""Run alerts to Alertmanager: the bridge that reads the alert topic and the alerts it posts."""
