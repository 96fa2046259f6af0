"""The all-in-one launcher behind ``make up`` (``python -m services.up``)."""
