//! The paper's experiments, one file each, with embedded default configs and quantitative checks.
