// Cluster module: see issues; placeholder until implemented.
