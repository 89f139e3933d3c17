"""Models: the defaults shipped as PyPI packages, the production catalog and the quant planner."""
