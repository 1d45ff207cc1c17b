//! The floating-point types the engine runs in: `f64` (default, analysis) and `f32` (speed).

use faer::traits::RealField;

/// A real scalar the dense-chain engine can run in. Implemented for `f32` and `f64`.
pub trait Real:
    RealField + Copy + Default + Send + Sync + std::fmt::Debug + std::fmt::Display + PartialOrd + 'static
{
    /// The safetensors dtype of this scalar.
    const DTYPE: safetensors::Dtype;
    /// Machine epsilon.
    const EPS: Self;
    /// Conversion from `f64` (rounding for `f32`).
    fn from_f64(x: f64) -> Self;
    /// Conversion to `f64` (exact).
    fn to_f64(self) -> f64;
    /// `e^x`.
    fn exp(self) -> Self;
    /// `ln x`.
    fn ln(self) -> Self;
    /// `tanh x`.
    fn tanh(self) -> Self;
    /// `√x`.
    fn sqrt(self) -> Self;
    /// `|x|`.
    fn abs(self) -> Self;
    /// `max(self, other)`.
    fn max(self, other: Self) -> Self;
    /// Whether the value is finite.
    fn is_finite(self) -> bool;
    /// Little-endian bytes of a slice of this scalar.
    fn to_le_bytes_vec(v: &[Self]) -> Vec<u8>;
    /// Takes this thread's GEMM scratch buffer (empty on first use, or while a caller on the same thread holds
    /// it); give it back with [`Real::put_scratch`], so that it grows once and the step loop allocates nothing.
    fn take_scratch() -> Vec<Self>;
    /// Returns the buffer of [`Real::take_scratch`] to this thread.
    fn put_scratch(v: Vec<Self>);
}

macro_rules! impl_real {
    ($t:ty, $dt:expr, $scratch:ident) => {
        thread_local! {
            static $scratch: std::cell::Cell<Vec<$t>> = const { std::cell::Cell::new(Vec::new()) };
        }
        impl Real for $t {
            fn take_scratch() -> Vec<Self> {
                $scratch.with(|c| c.take())
            }
            fn put_scratch(v: Vec<Self>) {
                $scratch.with(|c| c.set(v));
            }
            const DTYPE: safetensors::Dtype = $dt;
            const EPS: Self = <$t>::EPSILON;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn to_le_bytes_vec(v: &[Self]) -> Vec<u8> {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        }
    };
}

impl_real!(f64, safetensors::Dtype::F64, SCRATCH_F64);
impl_real!(f32, safetensors::Dtype::F32, SCRATCH_F32);
