"""Room agents' runtime: an agent's chat model, its tools, and one reply (framework-free)."""
