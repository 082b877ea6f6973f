// Engine module: see issues; placeholder until implemented.
enum Placeholder {}
