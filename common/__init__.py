"""Ground layer: typed errors, SQL engine helpers and JSON safety, imported by every layer above."""
