"""Running GAZE: the `gaze` command, the service registry, the process that runs one nameko service and
the migrations runner. It may import every service (it is what starts them); no service imports it."""
