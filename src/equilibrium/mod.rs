//! Noise equilibria of symmetry orbits: the Noether flow Tr[AΣ], λ*, joint balancing, teleport.
