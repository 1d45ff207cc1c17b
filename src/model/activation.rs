//! Activations φ with their first and second derivatives, in one table so that f, f′ and f″ cannot drift
//! apart. Derivatives are written in terms of the pre-activation `z` and the output `y = φ(z)`, whichever is
//! cheaper (tanh′ = 1 − y²).

use crate::error::{Error, Result};
use crate::real::Real;
use serde::{Deserialize, Serialize};

/// A per-layer activation function.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(try_from = "String", into = "String")]
pub enum Activation {
    /// φ(z) = z (positively homogeneous).
    #[default]
    Identity,
    /// φ(z) = max(z, 0) (positively homogeneous).
    Relu,
    /// φ(z) = z for z > 0, αz otherwise (positively homogeneous).
    LeakyRelu {
        /// Negative slope α.
        alpha: f64,
    },
    /// φ(z) = tanh z (no rescaling symmetry).
    Tanh,
}

/// `(variant => (φ(z), φ′(z, y), φ″(z, y)))`: one line per activation. Expanded into plain `match`es so that
/// every call inlines (no dynamic dispatch in the element loops).
macro_rules! activation_table {
    (|$z:ident, $y:ident| { $( $pat:pat => ($f:expr, $d1:expr, $d2:expr) ),* $(,)? }) => {
        impl Activation {
            /// φ(z).
            #[inline(always)]
            #[allow(unused_variables)]
            pub fn value<T: Real>(self, $z: T) -> T {
                match self { $( $pat => $f ),* }
            }
            /// φ′(z), given z and y = φ(z).
            #[inline(always)]
            #[allow(unused_variables)]
            pub fn d1<T: Real>(self, $z: T, $y: T) -> T {
                match self { $( $pat => $d1 ),* }
            }
            /// φ″(z), given z and y = φ(z) (zero almost everywhere for piecewise-linear φ).
            #[inline(always)]
            #[allow(unused_variables)]
            pub fn d2<T: Real>(self, $z: T, $y: T) -> T {
                match self { $( $pat => $d2 ),* }
            }
        }
    };
}

activation_table! { |z, y| {
    Activation::Identity => (z, T::one(), T::zero()),
    Activation::Relu => (if z > T::zero() { z } else { T::zero() }, if z > T::zero() { T::one() } else { T::zero() }, T::zero()),
    Activation::LeakyRelu { alpha } => (if z > T::zero() { z } else { T::from_f64(alpha) * z },
                                        if z > T::zero() { T::one() } else { T::from_f64(alpha) }, T::zero()),
    Activation::Tanh => (z.tanh(), T::one() - y * y, T::from_f64(-2.0) * y * (T::one() - y * y)),
}}

impl Activation {
    /// Whether φ(cz) = cφ(z) for c > 0, which gives hidden units a rescaling symmetry.
    pub fn is_positively_homogeneous(self) -> bool {
        !matches!(self, Activation::Tanh)
    }

    /// Whether φ is the identity (linear layer pairs then have a double-rotation symmetry).
    pub fn is_identity(self) -> bool {
        matches!(self, Activation::Identity)
    }

    /// Parses `identity`, `linear`, `relu`, `tanh`, `leaky_relu` (α = 0.01) or `leaky_relu(0.2)`.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "identity" | "linear" | "none" => return Ok(Activation::Identity),
            "relu" => return Ok(Activation::Relu),
            "tanh" => return Ok(Activation::Tanh),
            "leaky_relu" | "leakyrelu" => return Ok(Activation::LeakyRelu { alpha: 0.01 }),
            _ => {}
        }
        if let Some(rest) = t.strip_prefix("leaky_relu(").and_then(|r| r.strip_suffix(')')) {
            if let Ok(alpha) = rest.trim().parse::<f64>() {
                if alpha.is_finite() {
                    return Ok(Activation::LeakyRelu { alpha });
                }
            }
        }
        Err(Error::Unknown {
            kind: "activation",
            name: s.to_string(),
            expected: "identity, relu, leaky_relu, leaky_relu(ALPHA), tanh".into(),
        })
    }

    /// The name accepted by [`Activation::parse`].
    pub fn name(self) -> String {
        match self {
            Activation::Identity => "identity".into(),
            Activation::Relu => "relu".into(),
            Activation::LeakyRelu { alpha } => format!("leaky_relu({alpha})"),
            Activation::Tanh => "tanh".into(),
        }
    }

    /// All activations with a representative parameter, for tests that must cover every variant.
    pub fn all() -> [Activation; 4] {
        [Activation::Identity, Activation::Relu, Activation::LeakyRelu { alpha: 0.1 }, Activation::Tanh]
    }
}

impl TryFrom<String> for Activation {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Activation::parse(&s)
    }
}

impl From<Activation> for String {
    fn from(a: Activation) -> String {
        a.name()
    }
}

impl std::str::FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Activation::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        let h = 1e-6;
        for act in Activation::all() {
            for &z in &[-1.3, -0.2, 0.4, 2.1] {
                let y = act.value(z);
                let fd1 = (act.value(z + h) - act.value(z - h)) / (2.0 * h);
                assert!((act.d1(z, y) - fd1).abs() < 1e-8, "{act:?} d1 at {z}");
                let fd2 = (act.d1(z + h, act.value(z + h)) - act.d1(z - h, act.value(z - h))) / (2.0 * h);
                assert!((act.d2(z, y) - fd2).abs() < 1e-6, "{act:?} d2 at {z}");
            }
        }
    }

    #[test]
    fn parse_roundtrip_and_errors() {
        for act in Activation::all() {
            assert_eq!(Activation::parse(&act.name()).unwrap(), act);
        }
        let e = Activation::parse("gelu").unwrap_err().to_string();
        assert!(e.contains("gelu") && e.contains("relu"), "{e}");
    }
}
