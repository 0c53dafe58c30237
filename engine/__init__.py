"""The engine: component spec, cache and atomic commit, artifacts, ML Metadata, lock, errors; it imports nothing from components or the application."""
