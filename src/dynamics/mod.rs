//! Training dynamics: GD, SGD, SDE, gradient flow, schedules and observers.
