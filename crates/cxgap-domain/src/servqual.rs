//! SERVQUAL service quality (gap 5): Q = P − E per RATER dimension, combined into one
//! service-quality score unweighted or weighted by the importance customers give each
//! dimension (Parasuraman, Zeithaml & Berry 1988, 1991).

use crate::model::Dimension;
use serde::{Deserialize, Serialize};

/// Importance weights indexed by [`Dimension::index`]; normalised when used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImportanceWeights(pub [f64; 5]);

impl Default for ImportanceWeights {
    /// The mean importance points customers allocated in Parasuraman et al. (1991):
    /// reliability 32, responsiveness 22, assurance 19, empathy 16, tangibles 11.
    fn default() -> Self {
        let mut w = [0.0; 5];
        w[Dimension::Reliability.index()] = 0.32;
        w[Dimension::Responsiveness.index()] = 0.22;
        w[Dimension::Assurance.index()] = 0.19;
        w[Dimension::Empathy.index()] = 0.16;
        w[Dimension::Tangibles.index()] = 0.11;
        ImportanceWeights(w)
    }
}

impl ImportanceWeights {
    pub fn get(&self, d: Dimension) -> f64 {
        self.0[d.index()]
    }

    /// `Err` names the problem: weights must be finite, non-negative and not all zero.
    pub fn new(weights: [f64; 5]) -> Result<Self, String> {
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err("importance weights must be non-negative numbers".into());
        }
        if weights.iter().sum::<f64>() <= 0.0 {
            return Err("at least one importance weight must be positive".into());
        }
        Ok(ImportanceWeights(weights))
    }
}

/// Mean of the dimension gaps that are present.
pub fn unweighted(gaps: &[Option<f64>; 5]) -> Option<f64> {
    let present: Vec<f64> = gaps.iter().flatten().copied().collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
}

/// Importance-weighted mean of the dimension gaps, renormalised over the present ones.
pub fn weighted(gaps: &[Option<f64>; 5], w: &ImportanceWeights) -> Option<f64> {
    let (num, den) = gaps
        .iter()
        .zip(w.0.iter())
        .filter_map(|(g, w)| g.map(|g| (g * w, *w)))
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servqual_reference_example() {
        let mut gaps = [None; 5];
        gaps[Dimension::Tangibles.index()] = Some(-0.65);
        gaps[Dimension::Reliability.index()] = Some(-1.10);
        gaps[Dimension::Responsiveness.index()] = Some(-0.83);
        gaps[Dimension::Assurance.index()] = Some(-0.70);
        gaps[Dimension::Empathy.index()] = Some(-1.01);
        assert!((unweighted(&gaps).unwrap() + 0.858).abs() < 1e-12);
        let w = weighted(&gaps, &ImportanceWeights::default()).unwrap();
        assert!((w + 0.9007).abs() < 1e-12, "{w}");
    }

    #[test]
    fn missing_dimensions_renormalise() {
        let mut gaps = [None; 5];
        gaps[Dimension::Reliability.index()] = Some(-1.0);
        assert_eq!(weighted(&gaps, &ImportanceWeights::default()), Some(-1.0));
        assert_eq!(unweighted(&[None; 5]), None);
        assert!(ImportanceWeights::new([0.0; 5]).is_err());
        assert!(ImportanceWeights::new([1.0, -1.0, 0.0, 0.0, 0.0]).is_err());
    }
}
