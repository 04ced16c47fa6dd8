"""The environment variables the mesh reads, found in the code and documented in one list."""
