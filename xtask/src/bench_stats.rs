//! Summaries of repeated measurements: min, median, max and the coefficient of variation, so a
//! reader can tell a difference from the noise of the run it came from.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// Standard deviation over the mean (0 for one sample).
    pub cv: f64,
    pub n: usize,
}

impl Summary {
    /// `None` when no value is finite.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 0 { (v[n / 2 - 1] + v[n / 2]) / 2.0 } else { v[n / 2] };
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        let cv = if mean != 0.0 { var.sqrt() / mean.abs() } else { 0.0 };
        Some(Summary { min: v[0], median, max: v[n - 1], cv, n })
    }

    pub fn json(&self) -> Value {
        json!({ "min": self.min, "median": self.median, "max": self.max, "cv": self.cv, "n": self.n })
    }

    /// "median (min–max, CV x %)".
    pub fn cell(&self, precision: usize) -> String {
        format!("{:.p$} ({:.p$}–{:.p$}, CV {:.1} %)", self.median, self.min, self.max, self.cv * 100.0, p = precision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let s = Summary::of([3.0, 1.0, 2.0, f64::NAN]).expect("values");
        assert_eq!((s.min, s.median, s.max, s.n), (1.0, 2.0, 3.0, 3));
        assert!((s.cv - 0.5).abs() < 1e-12);
        assert_eq!(Summary::of([4.0, 2.0]).expect("values").median, 3.0);
        assert!(Summary::of([f64::NAN]).is_none());
        assert_eq!(Summary::of([5.0]).expect("one").cv, 0.0);
    }
}
