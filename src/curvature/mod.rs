//! Curvature: Hessian-vector products, Lanczos, Hutchinson, sharpness along symmetry orbits.
