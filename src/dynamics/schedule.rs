//! Learning-rate schedules `η(k)` for step k = 0, 1, ….

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A learning-rate schedule relative to the peak rate `lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// `η(k) = lr`.
    #[default]
    Constant,
    /// Linear warmup `η(k) = lr·(k+1)/warmup_steps` for `k < warmup_steps`, then `lr`.
    Warmup {
        /// Number of warmup steps.
        warmup_steps: u64,
    },
    /// Linear warmup, then cosine decay from `lr` to `min_lr` at step `total_steps`.
    WarmupCosine {
        /// Number of warmup steps.
        warmup_steps: u64,
        /// Step at which the decay ends (defaults to the run length when 0).
        #[serde(default)]
        total_steps: u64,
        /// Final learning rate.
        #[serde(default)]
        min_lr: f64,
    },
}

impl Schedule {
    /// Checks the schedule against a run of `steps` steps at peak rate `lr`: a warmup must end within the run
    /// (before its last step when a cosine decay follows), a cosine decay must end after its warmup, and
    /// `min_lr` must lie in [0, lr].
    pub fn validate(&self, lr: f64, steps: u64) -> Result<()> {
        let warmup = match *self {
            Schedule::Constant => return Ok(()),
            Schedule::Warmup { warmup_steps } | Schedule::WarmupCosine { warmup_steps, .. } => warmup_steps,
        };
        if warmup == 0 {
            return Err(Error::Config(
                "schedule.warmup_steps = 0: must be positive (use kind = \"constant\" for no warmup)".into(),
            ));
        }
        if warmup > steps {
            return Err(Error::Config(format!(
                "schedule.warmup_steps = {warmup} exceeds steps = {steps}: the run would end before the rate \
                 reaches lr; use warmup_steps ≤ {steps}"
            )));
        }
        if let Schedule::WarmupCosine { total_steps, min_lr, .. } = *self {
            if warmup >= steps {
                return Err(Error::Config(format!(
                    "schedule.warmup_steps = {warmup} is not below steps = {steps}: the warmup covers the whole \
                     run, so kind = \"warmup_cosine\" never reaches its cosine decay and min_lr/total_steps never \
                     take effect; use warmup_steps < {steps} (or kind = \"warmup\")"
                )));
            }
            if total_steps != 0 && total_steps <= warmup {
                return Err(Error::Config(format!(
                    "schedule.total_steps = {total_steps} is not after warmup_steps = {warmup}: the cosine decay \
                     must end after the warmup (total_steps > {warmup}, or 0 for the run length)"
                )));
            }
            if !(min_lr.is_finite() && (0.0..=lr).contains(&min_lr)) {
                return Err(Error::Config(format!(
                    "schedule.min_lr = {min_lr} must lie in [0, lr] = [0, {lr}] (the decay goes down from lr)"
                )));
            }
        }
        Ok(())
    }

    /// `η(k)` for peak rate `lr` in a run of `steps` steps.
    #[inline]
    pub fn lr(&self, lr: f64, k: u64, steps: u64) -> f64 {
        match *self {
            Schedule::Constant => lr,
            Schedule::Warmup { warmup_steps } => {
                if k < warmup_steps {
                    lr * (k + 1) as f64 / warmup_steps as f64
                } else {
                    lr
                }
            }
            Schedule::WarmupCosine { warmup_steps, total_steps, min_lr } => {
                let total = if total_steps == 0 { steps } else { total_steps };
                if k < warmup_steps {
                    lr * (k + 1) as f64 / warmup_steps as f64
                } else if k >= total {
                    min_lr
                } else {
                    let p = (k - warmup_steps) as f64 / (total - warmup_steps).max(1) as f64;
                    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * p).cos())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_have_the_documented_shape() {
        let w = Schedule::Warmup { warmup_steps: 10 };
        assert_eq!(w.lr(1.0, 0, 100), 0.1);
        assert_eq!(w.lr(1.0, 9, 100), 1.0);
        assert_eq!(w.lr(1.0, 50, 100), 1.0);
        let c = Schedule::WarmupCosine { warmup_steps: 10, total_steps: 0, min_lr: 0.0 };
        assert!((c.lr(1.0, 10, 110) - 1.0).abs() < 1e-15);
        assert!((c.lr(1.0, 60, 110) - 0.5).abs() < 1e-12);
        assert!(c.lr(1.0, 109, 110) < 1e-3);
        assert!(Schedule::Warmup { warmup_steps: 0 }.validate(1.0, 10).is_err());
        assert!(Schedule::Warmup { warmup_steps: 11 }.validate(1.0, 10).is_err());
        assert!(Schedule::Warmup { warmup_steps: 10 }.validate(1.0, 10).is_ok());
        let cos = |w, t, m| Schedule::WarmupCosine { warmup_steps: w, total_steps: t, min_lr: m };
        assert!(cos(10, 5, 0.0).validate(1.0, 100).is_err());
        assert!(cos(10, 0, 2.0).validate(1.0, 100).is_err());
        assert!(cos(10, 50, 0.5).validate(1.0, 100).is_ok());
        assert!(cos(100, 0, 0.0).validate(1.0, 100).is_err(), "no step of cosine decay");
        assert!(cos(99, 0, 0.0).validate(1.0, 100).is_ok());
    }
}
