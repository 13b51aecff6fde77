//! Calibration inputs: one array per model input, samples along the first axis.

use std::collections::BTreeMap;

use ndarray::{Axis, Slice};

use crate::ir::Array;
use crate::quant::observer::CalibrationMethod;
use crate::{Error, Result, map_array};

/// What `--calibrate NAME=FILE.npy`, `--calibration-batch` and `--calibration-method` give.
#[derive(Clone, Debug)]
pub struct CalibrationSet {
    /// Per model input: samples stacked along axis 0.
    pub inputs: BTreeMap<String, Array>,
    /// Samples per tract run.
    pub batch: usize,
    pub method: CalibrationMethod,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

impl CalibrationSet {
    /// The number of samples, which every input must agree on.
    pub fn samples(&self) -> Result<usize> {
        let mut counts = self
            .inputs
            .iter()
            .map(|(name, a)| (name, a.shape().first().copied().unwrap_or(0)));
        let Some((first_name, n)) = counts.next() else {
            return Err(Error::Usage(
                "calibration needs at least one --calibrate NAME=FILE.npy".into(),
            ));
        };
        for (name, m) in counts {
            if m != n {
                return Err(Error::Usage(format!(
                    "calibration inputs disagree on the sample count: '{first_name}' has {n}, '{name}' has {m}"
                )));
            }
        }
        if n == 0 {
            return Err(Error::Usage(format!(
                "calibration input '{first_name}' has no samples (its first dimension is 0)"
            )));
        }
        Ok(n)
    }

    /// Rows `start..end` of one input.
    pub fn rows(&self, name: &str, start: usize, end: usize) -> Array {
        let a = &self.inputs[name];
        map_array!(a, v => v.slice_axis(Axis(0), Slice::from(start..end)).to_owned())
    }

    /// The rows at `indices` (in that order, repeats allowed) of one input.
    pub fn rows_at(&self, name: &str, indices: &[usize]) -> Array {
        let a = &self.inputs[name];
        map_array!(a, v => v.select(Axis(0), indices))
    }
}
