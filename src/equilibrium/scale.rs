//! Scale symmetry of a normalised block: A = I on the block is positive semi-definite, so
//! `Tr[AΣ] = Tr Σ_block ≥ 0` and the charge `‖θ_block‖²` grows forever: no finite equilibrium without weight
//! decay (DESIGN.md §1).

use super::Equilibrium;

/// [`Equilibrium::Unbounded`] when the block has noise (`trace > zero`), [`Equilibrium::Dead`] otherwise.
pub fn equilibrium(trace: f64, zero: f64) -> Equilibrium {
    if trace > zero {
        Equilibrium::Unbounded
    } else {
        Equilibrium::Dead
    }
}
