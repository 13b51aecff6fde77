//! Streaming calibration statistics. Memory per observed value is fixed (a histogram of
//! [`BINS`] bins over |x| plus a few moments), however many samples pass through.

use std::fmt;
use std::str::FromStr;

/// Bins of the |x| histogram.
pub const BINS: usize = 2048;

/// How the clipping threshold of a symmetric quantizer is chosen from the statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum CalibrationMethod {
    /// The largest |x| seen.
    #[default]
    MinMax,
    /// The given percentile of |x| (e.g. 99.99).
    Percentile(f64),
    /// The clip that minimises the expected squared quantization error over the histogram.
    Mse,
}

impl fmt::Display for CalibrationMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalibrationMethod::MinMax => f.write_str("minmax"),
            CalibrationMethod::Percentile(p) => write!(f, "percentile={p}"),
            CalibrationMethod::Mse => f.write_str("mse"),
        }
    }
}

impl FromStr for CalibrationMethod {
    type Err = String;
    /// `minmax`, `mse`, `percentile` (99.99) or `percentile=99.9`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minmax" => Ok(CalibrationMethod::MinMax),
            "mse" => Ok(CalibrationMethod::Mse),
            "percentile" => Ok(CalibrationMethod::Percentile(99.99)),
            _ => match s.strip_prefix("percentile=").map(str::parse::<f64>) {
                Some(Ok(p)) if p > 0.0 && p <= 100.0 => Ok(CalibrationMethod::Percentile(p)),
                _ => Err(format!(
                    "unknown calibration method '{s}' (minmax, mse, percentile, percentile=P)"
                )),
            },
        }
    }
}

/// Statistics of one value over all calibration samples.
#[derive(Clone, Debug)]
pub struct Observer {
    pub min: f64,
    pub max: f64,
    pub count: u64,
    pub sum: f64,
    /// Counts of |x| in bins of `width`; bin i covers [i·width, (i+1)·width).
    bins: Vec<u64>,
    width: f64,
}

impl Default for Observer {
    fn default() -> Self {
        Observer {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            count: 0,
            sum: 0.0,
            bins: vec![0; BINS],
            width: 0.0,
        }
    }
}

impl Observer {
    /// Adds a batch of values. NaNs are ignored.
    pub fn observe(&mut self, values: impl IntoIterator<Item = f64> + Clone) {
        let mut batch_max = 0f64;
        for v in values.clone() {
            if v.is_nan() {
                continue;
            }
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.count += 1;
            self.sum += v;
            batch_max = batch_max.max(v.abs());
        }
        if batch_max == 0.0 && self.width == 0.0 {
            // Only zeros so far: count them in bin 0 once a width exists.
            self.bins[0] += values.into_iter().filter(|v| !v.is_nan()).count() as u64;
            return;
        }
        if self.width == 0.0 {
            self.width = batch_max / BINS as f64;
        }
        // Widen by powers of two, merging bin pairs, until the batch fits.
        while batch_max >= self.width * BINS as f64 {
            for i in 0..BINS / 2 {
                self.bins[i] = self.bins[2 * i] + self.bins[2 * i + 1];
            }
            self.bins[BINS / 2..].iter_mut().for_each(|b| *b = 0);
            self.width *= 2.0;
        }
        for v in values {
            if v.is_nan() {
                continue;
            }
            let i = ((v.abs() / self.width) as usize).min(BINS - 1);
            self.bins[i] += 1;
        }
    }

    pub fn abs_max(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.min.abs().max(self.max.abs())
        }
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The clipping threshold for a symmetric quantizer with `levels` steps on each side
    /// (127 for int8), never above the largest |x| seen.
    pub fn clip(&self, method: CalibrationMethod, levels: f64) -> f64 {
        let abs_max = self.abs_max();
        if self.width == 0.0 || abs_max == 0.0 {
            return abs_max;
        }
        let clip = match method {
            CalibrationMethod::MinMax => abs_max,
            CalibrationMethod::Percentile(p) => self.percentile(p),
            CalibrationMethod::Mse => self.mse_clip(levels),
        };
        clip.min(abs_max)
    }

    fn percentile(&self, p: f64) -> f64 {
        let total: u64 = self.bins.iter().sum();
        let target = (total as f64 * p / 100.0).ceil() as u64;
        let mut seen = 0;
        for (i, &n) in self.bins.iter().enumerate() {
            seen += n;
            if seen >= target {
                return (i + 1) as f64 * self.width;
            }
        }
        BINS as f64 * self.width
    }

    /// Minimises `Σ n_v · err(v, c)` over bin edges c, where err is the uniform rounding
    /// noise `Δ²/12` (Δ = c/levels) inside the range and `(v − c)²` beyond it. Suffix sums of
    /// n, n·v, n·v² make each candidate O(1).
    fn mse_clip(&self, levels: f64) -> f64 {
        let center = |i: usize| (i as f64 + 0.5) * self.width;
        let mut suffix = vec![(0f64, 0f64, 0f64); BINS + 1];
        for i in (0..BINS).rev() {
            let (n, v) = (self.bins[i] as f64, center(i));
            let (a, b, c) = suffix[i + 1];
            suffix[i] = (a + n, b + n * v, c + n * v * v);
        }
        let total = suffix[0].0;
        let mut best = (f64::INFINITY, BINS as f64 * self.width);
        for (k, &(n_out, sum_v, sum_v2)) in suffix.iter().enumerate().skip(1) {
            let clip = k as f64 * self.width;
            let step = clip / levels;
            let inside = (total - n_out) * step * step / 12.0;
            let outside = sum_v2 - 2.0 * clip * sum_v + clip * clip * n_out;
            let err = inside + outside;
            if err < best.0 {
                best = (err, clip);
            }
        }
        best.1
    }
}
