//! Result records of the table-producing commands: one flat serde struct per command, one value per row of
//! its exports (STYLE.md §12). Each struct is the schema of `--export-json` (`results`), `--export-csv` and
//! `--export-markdown`; its [`Record::COLUMNS`] are its field names in order (tested below).
//!
//! Rows: `analyze` one per symmetry (every rescaled unit, linear pair and scale block); `sharpness` one per
//! eigenvalue (the top k and the bottom one at θ, then the top one at each orbit point); `symmetries` one per
//! symmetry; `teleport` one per orbit ([`OrbitMove`]). Undefined values are `None` (JSON null, empty CSV field).

use super::exporter::Record;
use crate::curvature::{OrbitPoint, Sharpness};
use crate::equilibrium::net::{NetPairReport, NetSymmetryReport};
use crate::equilibrium::teleport::OrbitMove;
use crate::equilibrium::{Analysis, Status};
use crate::model::Architecture;
use crate::symmetry::channels::{DiagSymmetry, Family};
use crate::symmetry::linear_pairs::LinearPair;
use crate::symmetry::{double_rotation, enumerate, rescale, scale, Symmetry};
use serde::Serialize;

/// One symmetry of `noether analyze`: its charge, noise, Noether flow and equilibrium.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnalyzeRecord {
    /// `rescale`, `double_rotation` or `scale`.
    pub family: &'static str,
    /// Layer l (for a double rotation, the first layer of the pair (l, l+1)).
    pub layer: usize,
    /// Hidden unit (rescale only).
    pub unit: Option<usize>,
    /// Charge `θᵀAθ` (null for a double rotation, whose charge is a matrix).
    pub charge: Option<f64>,
    /// Incoming noise (centred; rescale only).
    pub noise_in: Option<f64>,
    /// Outgoing noise (centred; rescale only).
    pub noise_out: Option<f64>,
    /// `Tr[AΣ]` (centred, 1/N; B = I for a double rotation).
    pub tr_a_sigma: f64,
    /// Predicted `dC/dt = (η/S)Tr[AΣ]` per unit time (null for a double rotation).
    pub dc_dt_per_time: Option<f64>,
    /// Expected drift of C per SGD step (rescale only).
    pub drift_per_step: Option<f64>,
    /// Single-generator λ* of the chosen target (rescale only; null when there is none).
    pub lambda_star: Option<f64>,
    /// `ok | dead | no_equilibrium | unbounded`.
    pub status: Status,
    /// Dimension of the noisy subspace the pair was solved on (double rotation only).
    pub rank: Option<usize>,
}

impl Record for AnalyzeRecord {
    const COLUMNS: &'static [&'static str] = &[
        "family",
        "layer",
        "unit",
        "charge",
        "noise_in",
        "noise_out",
        "tr_a_sigma",
        "dc_dt_per_time",
        "drift_per_step",
        "lambda_star",
        "status",
        "rank",
    ];
}

impl AnalyzeRecord {
    /// One record per symmetry of `a`: rescalings, then linear pairs, then scale blocks.
    pub fn all(a: &Analysis) -> Vec<Self> {
        let none = |family, layer, tr_a_sigma, status| AnalyzeRecord {
            family,
            layer,
            unit: None,
            charge: None,
            noise_in: None,
            noise_out: None,
            tr_a_sigma,
            dc_dt_per_time: None,
            drift_per_step: None,
            lambda_star: None,
            status,
            rank: None,
        };
        let neurons = a.neurons.iter().map(|n| AnalyzeRecord {
            unit: Some(n.unit),
            charge: Some(n.charge),
            noise_in: Some(n.noise_in),
            noise_out: Some(n.noise_out),
            dc_dt_per_time: Some(n.dc_dt_per_time),
            drift_per_step: Some(n.drift_per_step),
            lambda_star: n.lambda_star,
            ..none("rescale", n.layer, n.tr_a_sigma, n.status)
        });
        let pairs = a.pairs.iter().map(|p| AnalyzeRecord {
            rank: Some(p.rank),
            ..none("double_rotation", p.layer, p.tr_a_sigma, p.status)
        });
        let scales = a.scales.iter().map(|s| AnalyzeRecord {
            charge: Some(s.charge),
            dc_dt_per_time: Some(s.dc_dt_per_time),
            ..none("scale", s.layer, s.tr_a_sigma, s.status)
        });
        neurons.chain(pairs).chain(scales).collect()
    }
}

/// One eigenvalue of `noether sharpness` (Hessian or Gauss–Newton matrix of the mean loss, as configured).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SharpnessRecord {
    /// Orbit coordinate λ of the point `e^{λA}θ`; null at θ itself.
    pub orbit_lambda: Option<f64>,
    /// `top` (the k-th largest) or `bottom` (the smallest).
    pub which: &'static str,
    /// k for a top eigenvalue (1 = largest); null for the bottom one.
    pub rank: Option<usize>,
    /// The eigenvalue.
    pub eigenvalue: f64,
    /// Trace at the same point (null when not computed).
    pub trace: Option<f64>,
    /// Mean loss at the same point.
    pub loss: f64,
    /// Whether Lanczos met its tolerance at that point and every value is finite; an unconverged or
    /// non-finite eigenvalue is only an estimate.
    pub converged: bool,
}

impl Record for SharpnessRecord {
    const COLUMNS: &'static [&'static str] =
        &["orbit_lambda", "which", "rank", "eigenvalue", "trace", "loss", "converged"];
}

impl SharpnessRecord {
    /// The top k eigenvalues at θ, descending, then the bottom one if computed.
    pub fn at_theta(s: &Sharpness) -> Vec<Self> {
        let row = |which, rank, eigenvalue| SharpnessRecord {
            orbit_lambda: None,
            which,
            rank,
            eigenvalue,
            trace: s.trace,
            loss: s.loss,
            converged: s.is_reliable(),
        };
        let top = s.top_eigenvalues.iter().enumerate().map(|(k, &e)| row("top", Some(k + 1), e));
        top.chain(s.bottom_eigenvalue.map(|e| row("bottom", None, e))).collect()
    }

    /// The top eigenvalue at one orbit point.
    pub fn on_orbit(p: &OrbitPoint) -> Self {
        SharpnessRecord {
            orbit_lambda: Some(p.lambda),
            which: "top",
            rank: Some(1),
            eigenvalue: p.top_eigenvalue,
            trace: p.trace,
            loss: p.loss,
            converged: p.sharpness.is_reliable(),
        }
    }
}

/// One exact exponential symmetry of `noether symmetries` with its Noether charge.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SymmetryRecord {
    /// `rescale`, `double_rotation` or `scale`.
    pub family: &'static str,
    /// Layer l (for a double rotation, the first layer of the pair).
    pub layer: usize,
    /// Hidden unit (rescale only).
    pub unit: Option<usize>,
    /// Charge `θᵀAθ` (null for a double rotation).
    pub charge: Option<f64>,
    /// Frobenius norm of the matrix charge `W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}` (double rotation only).
    pub charge_fro: Option<f64>,
}

impl Record for SymmetryRecord {
    const COLUMNS: &'static [&'static str] = &["family", "layer", "unit", "charge", "charge_fro"];
}

impl SymmetryRecord {
    /// Every symmetry [`enumerate`] lists for `arch`, with its charge at `theta`. Cost: O(P).
    pub fn all(arch: &Architecture, theta: &[f64]) -> Vec<Self> {
        enumerate(arch)
            .into_iter()
            .map(|s| match s {
                Symmetry::Rescale { layer, unit } => SymmetryRecord {
                    family: "rescale",
                    layer,
                    unit: Some(unit),
                    charge: Some(rescale::quad(arch, layer, unit, theta)),
                    charge_fro: None,
                },
                Symmetry::DoubleRotation { layer } => SymmetryRecord {
                    family: "double_rotation",
                    layer,
                    unit: None,
                    charge: None,
                    charge_fro: Some(double_rotation::matrix_charge(arch, layer, theta).norm_l2()),
                },
                Symmetry::Scale { layer } => SymmetryRecord {
                    family: "scale",
                    layer,
                    unit: None,
                    charge: Some(scale::quad(arch, layer, theta)),
                    charge_fro: None,
                },
            })
            .collect()
    }
}

/// One symmetry of a module tree (`symmetries`, `analyze` and `teleport` with an architecture): identified by
/// `(family, module, unit)` as in the JSON output; the noise columns are null in `symmetries`, `lambda_moved`
/// is null outside `teleport`. A linear pair's row (`double_rotation`, module = its first linear, unit null)
/// carries, as the dense chain's rows do, `charge_fro` instead of `charge`, `Tr[AΣ]` of B = I and `rank`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetSymmetryRecord {
    /// `rescale`, `scale` or `double_rotation`.
    pub family: &'static str,
    /// State-dict prefix of the symmetry's first writer.
    pub module: String,
    /// Channel or unit (rescale only).
    pub unit: Option<usize>,
    /// Charge `θᵀAθ` (null for a double rotation, whose charge is a matrix).
    pub charge: Option<f64>,
    /// Frobenius norm of the matrix charge `W₁W₁ᵀ + b₁b₁ᵀ − W₂ᵀW₂` (double rotation only).
    pub charge_fro: Option<f64>,
    /// Entries with `a_k > 0`.
    pub n_in: usize,
    /// Entries with `a_k < 0`.
    pub n_out: usize,
    /// Target noise on the `a_k > 0` entries (Σ_kk summed; centred, 1/N in continuous time).
    pub noise_in: Option<f64>,
    /// Target noise on the `a_k < 0` entries.
    pub noise_out: Option<f64>,
    /// `Tr[AM] = noise_in − noise_out`.
    pub tr_a_sigma: Option<f64>,
    /// Predicted `dC/dt = (η/S)Tr[AΣ]` per unit time.
    pub dc_dt_per_time: Option<f64>,
    /// λ* of this generator alone (null when there is none).
    pub lambda_star: Option<f64>,
    /// `ok | dead | no_equilibrium | unbounded`.
    pub status: Option<Status>,
    /// The λ teleport moved this symmetry by (joint solve).
    pub lambda_moved: Option<f64>,
    /// Whether the joint solve of `analyze` or `teleport` reached its tolerance (the same on every row).
    pub joint_converged: Option<bool>,
    /// Dimension of the noisy subspace the pair was solved on (double rotation in `analyze` only).
    pub rank: Option<usize>,
}

impl Record for NetSymmetryRecord {
    const COLUMNS: &'static [&'static str] = &[
        "family",
        "module",
        "unit",
        "charge",
        "charge_fro",
        "n_in",
        "n_out",
        "noise_in",
        "noise_out",
        "tr_a_sigma",
        "dc_dt_per_time",
        "lambda_star",
        "status",
        "lambda_moved",
        "joint_converged",
        "rank",
    ];
}

impl NetSymmetryRecord {
    /// The symmetry and its charge at θ (the `symmetries` row).
    pub fn of_symmetry(s: &DiagSymmetry, theta: &[f64]) -> Self {
        let (n_in, n_out) = s.counts();
        NetSymmetryRecord {
            family: family_name(s.family),
            module: s.module.clone(),
            unit: s.unit,
            charge: Some(s.charge(theta)),
            charge_fro: None,
            n_in,
            n_out,
            noise_in: None,
            noise_out: None,
            tr_a_sigma: None,
            dc_dt_per_time: None,
            lambda_star: None,
            status: None,
            lambda_moved: None,
            joint_converged: None,
            rank: None,
        }
    }

    /// The `analyze` row of one report; `flow = η/S`.
    pub fn of_report(r: &NetSymmetryReport, flow: f64) -> Self {
        NetSymmetryRecord {
            family: family_name(r.family),
            module: r.module.clone(),
            unit: r.unit,
            charge: Some(r.charge),
            charge_fro: None,
            n_in: r.n_in,
            n_out: r.n_out,
            noise_in: Some(r.noise_in),
            noise_out: Some(r.noise_out),
            tr_a_sigma: Some(r.tr_a_sigma),
            dc_dt_per_time: Some(flow * r.tr_a_sigma),
            lambda_star: r.lambda_star,
            status: Some(r.status),
            lambda_moved: None,
            joint_converged: None,
            rank: None,
        }
    }
}

impl NetSymmetryRecord {
    /// A linear pair and its matrix charge at θ (the `symmetries` row).
    pub fn of_pair(p: &LinearPair, theta: &[f64]) -> Self {
        Self::pair_row(p, p.matrix_charge(theta).norm_l2())
    }

    fn pair_row(p: &LinearPair, charge_fro: f64) -> Self {
        let (n_in, n_out) = p.counts();
        NetSymmetryRecord {
            family: "double_rotation",
            module: p.module.clone(),
            unit: None,
            charge: None,
            charge_fro: Some(charge_fro),
            n_in,
            n_out,
            noise_in: None,
            noise_out: None,
            tr_a_sigma: None,
            dc_dt_per_time: None,
            lambda_star: None,
            status: None,
            lambda_moved: None,
            joint_converged: None,
            rank: None,
        }
    }

    /// The `analyze` row of a pair's report (`Tr[AΣ]` and `dC/dt` of B = I); `flow = η/S`.
    pub fn of_pair_report(p: &LinearPair, r: &NetPairReport, flow: f64) -> Self {
        NetSymmetryRecord {
            tr_a_sigma: Some(r.tr_a_sigma),
            dc_dt_per_time: Some(flow * r.tr_a_sigma),
            status: Some(r.status),
            rank: Some(r.rank),
            ..Self::pair_row(p, r.matrix_charge.norm_l2())
        }
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Rescale => "rescale",
        Family::Scale => "scale",
    }
}

impl Record for OrbitMove {
    const COLUMNS: &'static [&'static str] = &["symmetry", "distance", "status", "converged"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::LanczosInfo;
    use crate::report::exporter::csv_header;

    fn assert_columns<R: Record>(sample: &R) {
        assert_eq!(csv_header(sample).unwrap(), R::COLUMNS, "COLUMNS must list the serde fields in order");
    }

    #[test]
    fn columns_are_the_serde_field_names() {
        assert_columns(&AnalyzeRecord {
            family: "rescale",
            layer: 0,
            unit: None,
            charge: None,
            noise_in: None,
            noise_out: None,
            tr_a_sigma: 0.0,
            dc_dt_per_time: None,
            drift_per_step: None,
            lambda_star: None,
            status: Status::Ok,
            rank: None,
        });
        let s = Sharpness {
            loss: 1.0,
            top_eigenvalues: vec![2.0],
            bottom_eigenvalue: Some(-1.0),
            trace: None,
            trace_method: None,
            trace_stderr: None,
            trace_ci95: None,
            lanczos: LanczosInfo { iterations: 1, residual: 0.0, threshold: 0.0, converged: true, hvps: 1 },
            hvps: 1,
            samples: 1,
            n_params: 1,
        };
        let rows = SharpnessRecord::at_theta(&s);
        assert_eq!(
            rows.iter().map(|r| (r.which, r.rank)).collect::<Vec<_>>(),
            [("top", Some(1)), ("bottom", None)]
        );
        assert_columns(&rows[0]);
        assert_columns(&SymmetryRecord {
            family: "scale",
            layer: 0,
            unit: None,
            charge: None,
            charge_fro: None,
        });
        let sym = DiagSymmetry {
            family: Family::Rescale,
            module: "0".into(),
            unit: Some(1),
            writers: vec!["0".into()],
            readers: vec!["2".into()],
            entries: vec![(0, 1.0), (3, -1.0)],
        };
        let row = NetSymmetryRecord::of_symmetry(&sym, &[1.0, 0.0, 0.0, 2.0]);
        assert_eq!((row.charge, row.n_in, row.n_out), (Some(-3.0), 1, 1));
        assert_columns(&row);
        assert_columns(&OrbitMove {
            symmetry: "rescale(l=0, j=0)".into(),
            distance: 0.5,
            status: Status::Ok,
            converged: true,
        });
    }
}
