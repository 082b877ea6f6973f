// Transport module: see issues; placeholder until implemented.
