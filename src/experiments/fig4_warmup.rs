//! fig4-warmup (placeholder while being written).
use super::{Context, Experiment};
use crate::error::Result;
use crate::report::Section;

/// The experiment.
pub struct Fig4;

impl Experiment for Fig4 {
    fn name(&self) -> &'static str {
        "fig4-warmup"
    }
    fn description(&self) -> &'static str {
        "warmup"
    }
    fn run(&self, _ctx: &Context<'_>) -> Result<Section> {
        Ok(Section::new("fig4-warmup", ""))
    }
}
