// Data module: see issues; placeholder until implemented.
