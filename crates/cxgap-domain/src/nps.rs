//! Net Promoter Score with its Wald and adjusted-Wald intervals and a two-sample test.

use crate::stats::{Comparison, Estimate, Z95};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NpsCounts {
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NpsClass {
    Detractor,
    Passive,
    Promoter,
}

impl NpsClass {
    pub fn of(score: u8) -> NpsClass {
        match score {
            9..=10 => NpsClass::Promoter,
            7..=8 => NpsClass::Passive,
            _ => NpsClass::Detractor,
        }
    }
}

/// An NPS figure on the −100…100 scale with both intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NpsFigure {
    pub wald: Estimate,
    pub adjusted_wald: Estimate,
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
}

impl NpsCounts {
    #[inline]
    pub fn add(&mut self, score: u8) {
        match NpsClass::of(score) {
            NpsClass::Promoter => self.promoters += 1,
            NpsClass::Passive => self.passives += 1,
            NpsClass::Detractor => self.detractors += 1,
        }
    }

    pub fn merge(&mut self, o: &NpsCounts) {
        self.promoters += o.promoters;
        self.passives += o.passives;
        self.detractors += o.detractors;
    }

    pub fn n(&self) -> u64 {
        self.promoters + self.passives + self.detractors
    }

    /// NPS as a difference of proportions in [−1, 1] and its variance
    /// Var = (pP + pD − (pP − pD)²)/n, from pseudo-counts `add` on each class.
    fn nps_var(&self, add_p: f64, add_d: f64, add_n: f64) -> (f64, f64) {
        let n = self.n() as f64 + add_n;
        let pp = (self.promoters as f64 + add_p) / n;
        let pd = (self.detractors as f64 + add_d) / n;
        let nps = pp - pd;
        (nps, (pp + pd - nps * nps) / n)
    }

    /// Variance of the NPS estimate (not of one response) in score units squared.
    pub fn variance(&self) -> Option<f64> {
        (self.n() > 0).then(|| self.nps_var(0.0, 0.0, 0.0).1 * 10_000.0)
    }

    /// Wald interval: NPS ± z·√Var, in score units, clamped to [−100, 100].
    pub fn wald(&self) -> Option<Estimate> {
        if self.n() == 0 {
            return None;
        }
        let (nps, var) = self.nps_var(0.0, 0.0, 0.0);
        let half = Z95 * var.sqrt();
        Some(Estimate {
            value: nps * 100.0,
            n: self.n(),
            lower: ((nps - half) * 100.0).max(-100.0),
            upper: ((nps + half) * 100.0).min(100.0),
        })
    }

    /// Adjusted-Wald interval (Rocks 2016, as popularised by Sauro/MeasuringU): add ¾ of a
    /// promoter, ¾ of a detractor and 1.5 passives (3 in all) before the Wald formula.
    /// Better coverage at small n. The point value reported stays the unadjusted NPS.
    pub fn adjusted_wald(&self) -> Option<Estimate> {
        if self.n() == 0 {
            return None;
        }
        let (adj, var) = self.nps_var(0.75, 0.75, 3.0);
        let half = Z95 * var.sqrt();
        Some(Estimate {
            value: self.nps_var(0.0, 0.0, 0.0).0 * 100.0,
            n: self.n(),
            lower: ((adj - half) * 100.0).max(-100.0),
            upper: ((adj + half) * 100.0).min(100.0),
        })
    }

    pub fn figure(&self) -> Option<NpsFigure> {
        Some(NpsFigure {
            wald: self.wald()?,
            adjusted_wald: self.adjusted_wald()?,
            promoters: self.promoters,
            passives: self.passives,
            detractors: self.detractors,
        })
    }

    /// Two-sample z-test of NPS difference: z = (NPS₁ − NPS₂)/√(Var₁ + Var₂).
    pub fn compare(&self, previous: &NpsCounts) -> Option<Comparison> {
        Some(Comparison::from_variances(self.wald()?, self.variance()?, previous.wald()?, previous.variance()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(p: u64, pa: u64, d: u64) -> NpsCounts {
        NpsCounts { promoters: p, passives: pa, detractors: d }
    }

    #[test]
    fn delighted_reference_example() {
        // Delighted's worked example: 32 promoters, 13 passives, 6 detractors.
        let w = counts(32, 13, 6).wald().unwrap();
        assert!((w.value - 50.980_392).abs() < 1e-5, "{w:?}");
        assert!((w.lower - 31.86).abs() < 0.01, "{w:?}");
        assert!((w.upper - 70.10).abs() < 0.01, "{w:?}");
        assert_eq!(w.n, 51);
    }

    #[test]
    fn adjusted_wald_is_pulled_toward_zero_and_in_range() {
        let c = counts(10, 0, 0);
        let w = c.wald().unwrap();
        let a = c.adjusted_wald().unwrap();
        // All promoters: Wald degenerates to a zero-width interval, adjusted-Wald does not.
        assert_eq!((w.lower, w.upper), (100.0, 100.0));
        assert!(a.lower < 100.0 && a.upper <= 100.0 && a.lower > 0.0, "{a:?}");
        // (10.75 − .75)/13 = 76.92 centre
        assert!(((a.lower + a.upper) / 2.0 - 76.92).abs() < 15.0);
    }

    #[test]
    fn two_sample_test_flags_real_differences_only() {
        let before = counts(300, 400, 300);
        let after = counts(200, 400, 400);
        let c = after.compare(&before).unwrap();
        assert!((c.difference + 20.0).abs() < 1e-9);
        assert!(c.significant(0.01), "{c:?}");
        let small = counts(1, 1, 2).compare(&counts(2, 1, 1)).unwrap();
        assert!(!small.significant(0.05), "{small:?}");
    }

    #[test]
    fn classes() {
        assert_eq!(NpsClass::of(0), NpsClass::Detractor);
        assert_eq!(NpsClass::of(6), NpsClass::Detractor);
        assert_eq!(NpsClass::of(7), NpsClass::Passive);
        assert_eq!(NpsClass::of(9), NpsClass::Promoter);
    }
}
