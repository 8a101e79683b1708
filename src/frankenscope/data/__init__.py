"""Items, probe pairs and their loaders."""
