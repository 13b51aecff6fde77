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
    /// Σx², for the variance (GELU→ReLU bias correction).
    pub sum_squares: f64,
    /// Counts of |x| in bins of `width`; bin i covers [i·width, (i+1)·width). Empty when the
    /// calibration method needs only the extremes.
    bins: Vec<u64>,
    width: f64,
    /// Per index of the last axis (`observe_rows` on an observer made by `per_channel`).
    pub channels: Option<ChannelStats>,
    track_channels: bool,
}

/// Extremes and moments per index of a value's last axis (its channels), which a per-channel
/// rescaling (`smooth-layer-norm`) turns into the rescaled value's statistics exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub sum: Vec<f64>,
    pub sum_squares: Vec<f64>,
}

impl ChannelStats {
    fn new(n: usize) -> ChannelStats {
        ChannelStats {
            min: vec![f64::INFINITY; n],
            max: vec![f64::NEG_INFINITY; n],
            sum: vec![0.0; n],
            sum_squares: vec![0.0; n],
        }
    }

    /// Largest |x| per channel.
    pub fn abs_max(&self) -> Vec<f64> {
        self.min
            .iter()
            .zip(&self.max)
            .map(|(lo, hi)| if lo > hi { 0.0 } else { lo.abs().max(hi.abs()) })
            .collect()
    }

    fn merge(&mut self, other: &ChannelStats) {
        for c in 0..self.min.len() {
            self.min[c] = self.min[c].min(other.min[c]);
            self.max[c] = self.max[c].max(other.max[c]);
            self.sum[c] += other.sum[c];
            self.sum_squares[c] += other.sum_squares[c];
        }
    }
}

/// Channel statistics are kept for values whose last axis is at most this long.
pub const MAX_CHANNELS: usize = 1 << 16;

impl Observer {
    /// An empty observer; `histogram` adds the |x| histogram percentile and MSE clips need.
    pub fn new(histogram: bool) -> Observer {
        Observer {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            count: 0,
            sum: 0.0,
            sum_squares: 0.0,
            bins: if histogram { vec![0; BINS] } else { Vec::new() },
            width: 0.0,
            channels: None,
            track_channels: false,
        }
    }

    /// `new`, also keeping statistics per index of the last axis (`observe_rows`).
    pub fn per_channel(histogram: bool) -> Observer {
        Observer {
            track_channels: true,
            ..Observer::new(histogram)
        }
    }

    /// Statistics that were estimated rather than observed (`--data-free`): the extremes, the
    /// mean and the mean square, as if from one sample; no histogram (clips are the extremes).
    pub fn estimated(min: f64, max: f64, mean: f64, mean_square: f64) -> Observer {
        Observer {
            min,
            max,
            count: 1,
            sum: mean,
            sum_squares: mean_square,
            bins: Vec::new(),
            width: 0.0,
            channels: None,
            track_channels: false,
        }
    }

    /// `observe`, plus statistics per index of the last axis, `channels` long (rows of a
    /// row-major array). Falls back to `observe` when the values are not whole rows.
    pub fn observe_rows(&mut self, values: &[f32], channels: usize) {
        // Channel statistics cover every sample or none.
        let first = self.count == 0;
        self.observe(values);
        let whole_rows = channels > 0 && channels <= MAX_CHANNELS && values.len() % channels == 0;
        if !self.track_channels || !whole_rows || (first && self.count == 0) {
            return;
        }
        if self.channels.is_none() && !first {
            return;
        }
        let stats = self
            .channels
            .get_or_insert_with(|| ChannelStats::new(channels));
        if stats.min.len() != channels {
            self.channels = None;
            return;
        }
        for row in values.chunks_exact(channels) {
            for (c, &v) in row.iter().enumerate() {
                if v.is_nan() {
                    continue;
                }
                let x = v as f64;
                stats.min[c] = stats.min[c].min(x);
                stats.max[c] = stats.max[c].max(x);
                stats.sum[c] += x;
                stats.sum_squares[c] += x * x;
            }
        }
    }

    /// The statistics of `x_c / divisor_c` (c on the last axis), from the channel statistics;
    /// None without them. The histogram does not survive a per-channel rescaling: clips of the
    /// result are its extremes.
    pub fn divided_per_channel(&self, divisors: &[f64]) -> Option<Observer> {
        let ch = self.channels.as_ref()?;
        if ch.min.len() != divisors.len() || divisors.iter().any(|&d| !d.is_finite() || d <= 0.0) {
            return None;
        }
        let mut out = ChannelStats::new(divisors.len());
        for (c, &d) in divisors.iter().enumerate() {
            out.min[c] = ch.min[c] / d;
            out.max[c] = ch.max[c] / d;
            out.sum[c] = ch.sum[c] / d;
            out.sum_squares[c] = ch.sum_squares[c] / (d * d);
        }
        Some(Observer {
            min: out.min.iter().copied().fold(f64::INFINITY, f64::min),
            max: out.max.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            count: self.count,
            sum: out.sum.iter().sum(),
            sum_squares: out.sum_squares.iter().sum(),
            bins: Vec::new(),
            width: 0.0,
            channels: Some(out),
            track_channels: true,
        })
    }

    /// Adds a batch of values in one pass. NaNs are ignored.
    pub fn observe(&mut self, values: &[f32]) {
        // Independent lanes so the loop vectorises; `f32::min`/`max` already skip NaN.
        const LANES: usize = 16;
        let (mut lo, mut hi, mut sum, mut squares, mut n) = (
            [f32::INFINITY; LANES],
            [f32::NEG_INFINITY; LANES],
            [0f64; LANES],
            [0f64; LANES],
            [0u32; LANES],
        );
        let mut chunks = values.chunks_exact(LANES);
        for chunk in &mut chunks {
            for j in 0..LANES {
                let v = chunk[j];
                lo[j] = lo[j].min(v);
                hi[j] = hi[j].max(v);
                let ok = !v.is_nan();
                let x = if ok { v as f64 } else { 0.0 };
                sum[j] += x;
                squares[j] += x * x;
                n[j] += ok as u32;
            }
        }
        let (mut lo, mut hi) = (
            lo.iter().copied().fold(f32::INFINITY, f32::min),
            hi.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        );
        let mut sum: f64 = sum.iter().sum();
        let mut squares: f64 = squares.iter().sum();
        let mut n: u64 = n.iter().map(|&c| c as u64).sum();
        for &v in chunks.remainder() {
            if !v.is_nan() {
                lo = lo.min(v);
                hi = hi.max(v);
                sum += v as f64;
                squares += v as f64 * v as f64;
                n += 1;
            }
        }
        if n == 0 {
            return;
        }
        self.min = self.min.min(lo as f64);
        self.max = self.max.max(hi as f64);
        self.sum += sum;
        self.sum_squares += squares;
        self.count += n;
        if self.bins.is_empty() {
            return;
        }
        let batch_max = (lo.abs().max(hi.abs())) as f64;
        if batch_max == 0.0 && self.width == 0.0 {
            self.bins[0] += n;
            return;
        }
        if self.width == 0.0 {
            self.width = batch_max / BINS as f64;
        }
        self.widen_to(batch_max);
        let inv = (1.0 / self.width) as f32;
        for &v in values {
            if !v.is_nan() {
                let i = ((v.abs() * inv) as usize).min(BINS - 1);
                self.bins[i] += 1;
            }
        }
    }

    /// Doubles the bin width (merging bin pairs) until `max` fits.
    fn widen_to(&mut self, max: f64) {
        while max >= self.width * BINS as f64 {
            for i in 0..BINS / 2 {
                self.bins[i] = self.bins[2 * i] + self.bins[2 * i + 1];
            }
            self.bins[BINS / 2..].iter_mut().for_each(|b| *b = 0);
            self.width *= 2.0;
        }
    }

    /// Adds another observer's statistics (from another worker). Deterministic for a given
    /// pair; histograms of other bin widths are re-binned by bin centre.
    pub fn merge(&mut self, other: &Observer) {
        if other.count == 0 {
            return;
        }
        match (&mut self.channels, &other.channels) {
            (Some(a), Some(b)) if a.min.len() == b.min.len() => a.merge(b),
            (None, Some(b)) if self.count == 0 => self.channels = Some(b.clone()),
            _ => self.channels = None,
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.sum_squares += other.sum_squares;
        self.count += other.count;
        if self.bins.is_empty() || other.bins.is_empty() {
            return;
        }
        if other.width == 0.0 {
            self.bins[0] += other.bins.iter().sum::<u64>();
            return;
        }
        if self.width == 0.0 {
            let zeros = self.bins[0];
            self.bins.clone_from(&other.bins);
            self.bins[0] += zeros;
            self.width = other.width;
            return;
        }
        self.widen_to(other.abs_max());
        for (i, &n) in other.bins.iter().enumerate() {
            let center = (i as f64 + 0.5) * other.width;
            self.bins[((center / self.width) as usize).min(BINS - 1)] += n;
        }
    }

    pub fn abs_max(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.min.abs().max(self.max.abs())
        }
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let mean = self.mean();
        (self.sum_squares / self.count as f64 - mean * mean)
            .max(0.0)
            .sqrt()
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
        if self.bins.is_empty() || self.width == 0.0 || abs_max == 0.0 {
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
