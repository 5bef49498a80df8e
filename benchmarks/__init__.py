"""numbanet's asv benchmark suite (see asv.conf.json at the top of the repository)."""
