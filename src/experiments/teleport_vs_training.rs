//! teleport-vs-training (placeholder, filled in below).
use super::{Context, Experiment};
use crate::error::Result;
use crate::report::Section;

/// The experiment.
pub struct TeleportVsTraining;

impl Experiment for TeleportVsTraining {
    fn name(&self) -> &'static str {
        "teleport-vs-training"
    }
    fn description(&self) -> &'static str {
        "One teleport reaches the noise equilibrium SGD needs many steps for; noise target against min-norm target"
    }
    fn run(&self, _ctx: &Context<'_>) -> Result<Section> {
        Ok(Section::new(self.name(), "not yet"))
    }
}
