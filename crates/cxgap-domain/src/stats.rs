//! Interval estimates and two-sample tests. Accumulators are exact integers (fixed point)
//! so that sums commute bit-for-bit; floating point appears only when a figure is read.

use serde::{Deserialize, Serialize};

/// Two-sided 95% normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A figure with its sample size and 95% interval. No figure is shown without its n.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub n: u64,
    pub lower: f64,
    pub upper: f64,
}

impl Estimate {
    pub fn map(self, f: impl Fn(f64) -> f64) -> Estimate {
        let (a, b) = (f(self.lower), f(self.upper));
        Estimate { value: f(self.value), n: self.n, lower: a.min(b), upper: a.max(b) }
    }

    /// Standard error implied by a normal-approximation interval.
    pub fn std_error(&self) -> f64 {
        (self.upper - self.lower) / (2.0 * Z95)
    }
}

/// Count, sum and sum of squares of integer observations (in the caller's fixed-point unit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub sum: i64,
    pub sumsq: i128,
}

impl Moments {
    pub const ZERO: Moments = Moments { n: 0, sum: 0, sumsq: 0 };

    #[inline]
    pub fn add(&mut self, x: i64) {
        self.n += 1;
        self.sum += x;
        self.sumsq += (x as i128) * (x as i128);
    }

    pub fn merge(&mut self, o: &Moments) {
        self.n += o.n;
        self.sum += o.sum;
        self.sumsq += o.sumsq;
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// `[n, sum, sumsq]` as 64-bit integers for storage; `None` if the sum of squares no
    /// longer fits (more than 9.2 million experience responses in one cell).
    pub fn to_parts(&self) -> Option<[i64; 3]> {
        Some([i64::try_from(self.n).ok()?, self.sum, i64::try_from(self.sumsq).ok()?])
    }

    pub fn from_parts(p: [i64; 3]) -> Moments {
        Moments { n: p[0].max(0) as u64, sum: p[1], sumsq: p[2] as i128 }
    }

    /// Mean and sample variance in units of `1/scale`.
    pub fn mean_var(&self, scale: f64) -> Option<(f64, f64)> {
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        let mean = self.sum as f64 / n / scale;
        let var = if self.n > 1 {
            // Exact in integers: n·Σx² − (Σx)² ≥ 0, so no catastrophic cancellation.
            let num = self.n as i128 * self.sumsq - (self.sum as i128) * (self.sum as i128);
            num as f64 / (n * (n - 1.0)) / (scale * scale)
        } else {
            0.0
        };
        Some((mean, var))
    }

    /// Mean with a Student-t 95% interval. One response says nothing about spread, so at
    /// n = 1 the interval is unbounded (serialised as nulls) rather than a false [x, x].
    pub fn estimate(&self, scale: f64) -> Option<Estimate> {
        let (mean, var) = self.mean_var(scale)?;
        let half = if self.n > 1 { t975(self.n - 1) * (var / self.n as f64).sqrt() } else { f64::INFINITY };
        Some(Estimate { value: mean, n: self.n, lower: mean - half, upper: mean + half })
    }
}

/// Share `k/n` with a Wilson score 95% interval (well behaved near 0 and 1 and at small n).
pub fn wilson(k: u64, n: u64) -> Option<Estimate> {
    if n == 0 {
        return None;
    }
    let (nf, p) = (n as f64, k as f64 / n as f64);
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = Z95 * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Some(Estimate { value: p, n, lower: (centre - half).max(0.0), upper: (centre + half).min(1.0) })
}

/// 0.975 quantile of Student's t with `df` degrees of freedom.
pub fn t975(df: u64) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df as usize - 1],
        _ => {
            // Cornish–Fisher expansion around the normal quantile; error < 1e-4 for df > 30.
            let (z, d) = (Z95, df as f64);
            z + (z.powi(3) + z) / (4.0 * d) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        }
    }
}

/// Standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Complementary error function, Chebyshev fit with fractional error below 1.2e-7
/// everywhere (Numerical Recipes `erfcc`).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Two-sided p-value of a z statistic.
pub fn two_sided_p(z: f64) -> f64 {
    (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0)
}

/// The result of testing whether two independent estimates differ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub current: Estimate,
    pub previous: Estimate,
    /// current − previous, in the estimates' unit.
    pub difference: f64,
    pub z: f64,
    pub p_value: f64,
}

impl Comparison {
    pub fn significant(&self, alpha: f64) -> bool {
        self.p_value < alpha
    }

    /// z-test from each side's variance of the estimate (in the estimate's unit squared).
    pub fn from_variances(current: Estimate, var_c: f64, previous: Estimate, var_p: f64) -> Comparison {
        let difference = current.value - previous.value;
        let se = (var_c + var_p).sqrt();
        let z = if se > 0.0 {
            difference / se
        } else if difference == 0.0 {
            0.0
        } else {
            difference.signum() * f64::INFINITY
        };
        Comparison { current, previous, difference, z, p_value: two_sided_p(z) }
    }
}

/// Welch-style comparison of two means (normal approximation; callers gate on a minimum n).
pub fn compare_means(cur: &Moments, prev: &Moments, scale: f64) -> Option<Comparison> {
    if cur.n < 2 || prev.n < 2 {
        return None;
    }
    let (_, vc) = cur.mean_var(scale)?;
    let (_, vp) = prev.mean_var(scale)?;
    Some(Comparison::from_variances(cur.estimate(scale)?, vc / cur.n as f64, prev.estimate(scale)?, vp / prev.n as f64))
}

/// Two-proportion z-test with the pooled variance under H0.
pub fn compare_proportions(k1: u64, n1: u64, k2: u64, n2: u64) -> Option<Comparison> {
    let cur = wilson(k1, n1)?;
    let prev = wilson(k2, n2)?;
    let pooled = (k1 + k2) as f64 / (n1 + n2) as f64;
    let var = pooled * (1.0 - pooled);
    Some(Comparison::from_variances(cur, var / n1 as f64, prev, var / n2 as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_matches_tables() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-1.0) - 0.158_655_25).abs() < 1e-6);
        assert!((two_sided_p(2.575_829) - 0.01).abs() < 1e-6);
    }

    #[test]
    fn mean_interval_uses_student_t() {
        let mut m = Moments::default();
        for x in [2, 4, 4, 4, 5, 5, 7, 9] {
            m.add(x);
        }
        let e = m.estimate(1.0).unwrap();
        assert_eq!(e.value, 5.0);
        // s² = 32/7; half-width = t(7) · s/√8 = 2.365 · 0.7559
        assert!((e.upper - 5.0 - 2.365 * (32.0f64 / 7.0 / 8.0).sqrt()).abs() < 1e-9);
        let mut one = Moments::default();
        one.add(4);
        let e = one.estimate(1.0).unwrap();
        assert_eq!((e.value, e.n), (4.0, 1));
        assert!(e.lower.is_infinite() && e.upper.is_infinite(), "{e:?}");
        assert!(compare_means(&one, &m, 1.0).is_none());
    }

    #[test]
    fn wilson_reference_value() {
        // Newcombe (1998), Stat Med 17:857, 81/263: score (Wilson) interval 0.2553–0.3662.
        let e = wilson(81, 263).unwrap();
        assert!((e.lower - 0.2553).abs() < 5e-4, "{e:?}");
        assert!((e.upper - 0.3662).abs() < 5e-4, "{e:?}");
        assert_eq!(wilson(0, 0), None);
        assert_eq!(wilson(0, 10).unwrap().lower, 0.0);
    }

    #[test]
    fn t_quantiles_join_smoothly() {
        assert!((t975(30) - 2.042).abs() < 1e-9);
        assert!((t975(31) - 2.0395).abs() < 1e-3);
        assert!((t975(120) - 1.9799).abs() < 1e-3);
        assert!(t975(10_000) > Z95 && t975(10_000) < Z95 + 1e-3);
    }

    #[test]
    fn proportion_test_reference() {
        // 60/100 vs 45/100: pooled p = .525, z = .15/√(.525·.475·.02) = 2.1239
        let c = compare_proportions(60, 100, 45, 100).unwrap();
        assert!((c.z - 2.1239).abs() < 1e-3, "{c:?}");
        assert!(c.significant(0.05) && !c.significant(0.01));
    }
}
