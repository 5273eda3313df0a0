//! The figures of one run, their targets, the table printed and the JSON written.

use serde_json::{Value, json};

/// What a figure must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// value / baseline ≥ this.
    RatioAtLeast(f64),
    /// value ≥ this.
    AtLeast(f64),
    /// value ≤ this.
    AtMost(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub key: String,
    pub label: String,
    pub value: f64,
    pub unit: String,
    /// The baseline's key in the same run, for a ratio.
    pub baseline: Option<String>,
    pub target: Option<Target>,
    pub note: String,
}

impl Figure {
    pub fn new(key: &str, label: &str, value: f64, unit: &str) -> Figure {
        Figure {
            key: key.into(),
            label: label.into(),
            value,
            unit: unit.into(),
            baseline: None,
            target: None,
            note: String::new(),
        }
    }

    pub fn against(mut self, baseline: &str) -> Figure {
        self.baseline = Some(baseline.into());
        self
    }

    pub fn target(mut self, t: Target) -> Figure {
        self.target = Some(t);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = note.into();
        self
    }
}

/// Percentile (nearest rank) of samples; `None` when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[derive(Debug, Default)]
pub struct Results {
    pub figures: Vec<Figure>,
    pub machine: Value,
    pub settings: Value,
}

impl Results {
    pub fn add(&mut self, f: Figure) {
        println!("  {:<58} {:>14} {}", f.label, fmt(f.value), f.unit);
        self.figures.push(f);
    }

    fn value(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key).map(|f| f.value)
    }

    fn ratio(&self, f: &Figure) -> Option<f64> {
        let b = self.value(f.baseline.as_deref()?)?;
        (b > 0.0).then(|| f.value / b)
    }

    /// Whether `f` meets its target (`None`: it has none, or its baseline is missing).
    pub fn met(&self, f: &Figure) -> Option<bool> {
        Some(match f.target? {
            Target::RatioAtLeast(r) => self.ratio(f)? >= r,
            Target::AtLeast(v) => f.value >= v,
            Target::AtMost(v) => f.value <= v,
        })
    }

    pub fn table(&self) -> String {
        let mut out = String::from("| measure | value | ratio to baseline | target | met |\n|---|---:|---:|---|---|\n");
        for f in &self.figures {
            let ratio = self.ratio(f).map(|r| format!("{r:.2}×")).unwrap_or_default();
            let target = match f.target {
                Some(Target::RatioAtLeast(r)) => format!("≥ {r}× {}", f.baseline.as_deref().unwrap_or("")),
                Some(Target::AtLeast(v)) => format!("≥ {} {}", fmt(v), f.unit),
                Some(Target::AtMost(v)) => format!("≤ {} {}", fmt(v), f.unit),
                None => String::new(),
            };
            let met = match self.met(f) {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            out.push_str(&format!("| {} | {} {} | {ratio} | {target} | {met} |\n", f.label, fmt(f.value), f.unit));
        }
        out
    }

    pub fn json(&self) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "key": f.key,
                    "label": f.label,
                    "value": f.value,
                    "unit": f.unit,
                    "baseline": f.baseline,
                    "ratio": self.ratio(f),
                    "target": f.target.map(|t| match t {
                        Target::RatioAtLeast(r) => json!({"ratio_at_least": r}),
                        Target::AtLeast(v) => json!({"at_least": v}),
                        Target::AtMost(v) => json!({"at_most": v}),
                    }),
                    "met": self.met(f),
                    "note": f.note,
                })
            })
            .collect();
        json!({ "machine": self.machine, "settings": self.settings, "figures": figures })
    }
}

fn fmt(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 { format!("-{grouped}") } else { grouped }
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(100.0));
        assert_eq!(percentile(&s, 99.0), Some(198.0));
        assert_eq!(percentile(&s, 100.0), Some(200.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn ratios_and_targets_use_the_baseline_of_the_same_run() {
        let mut r = Results::default();
        r.add(Figure::new("bare", "bare", 1000.0, "events/s"));
        r.add(Figure::new("ours", "ours", 400.0, "events/s").against("bare").target(Target::RatioAtLeast(0.5)));
        r.add(Figure::new("p99", "p99", 80.0, "ms").target(Target::AtMost(100.0)));
        r.add(Figure::new("orphan", "orphan", 1.0, "x").against("missing").target(Target::RatioAtLeast(1.0)));
        assert_eq!(r.met(&r.figures[1]), Some(false));
        assert_eq!(r.met(&r.figures[2]), Some(true));
        assert_eq!(r.met(&r.figures[3]), None, "no baseline, no verdict");
        let j = r.json();
        assert_eq!(j["figures"][1]["ratio"], 0.4);
        assert!(r.table().contains("| ours | 400.0 events/s | 0.40× | ≥ 0.5× bare | **no** |"), "{}", r.table());
        assert_eq!(fmt(1_234_567.0), "1,234,567");
    }
}
