"""What every service of the mesh repeats: settings, bootstrap, errors, storage, telemetry."""
