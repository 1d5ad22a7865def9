"""The thin layer that runs the library stages as Ray jobs: command line, configs, files, Ray."""
