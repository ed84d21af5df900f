"""Models, settings, database, bus, exchange access and operations code shared by every service."""
