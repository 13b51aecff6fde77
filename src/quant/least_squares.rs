//! Ridge-regularised least squares for refitting a linear layer: streaming normal equations
//! and a blocked Cholesky solve. Plain `f64` arithmetic, no graph.
//!
//! The problem (`replace-gelu-with-relu(refit)`): given rows `a` (the new layer input, with a
//! constant 1 appended for the bias) and targets `t` (what the old layer produced), find `W'`
//! minimising `Σ‖a·W' − t‖² + λ‖W' − W₀‖²` over the weight rows (the bias row is free).
//! Only `AᵀA` and `AᵀT` are needed, so any number of rows streams through fixed memory.

use ndarray::{Array2, ArrayView2, Axis, s};

use crate::{Error, Result};

/// `AᵀA` and `AᵀG` summed over rows, with `A = [x, 1]`: the normal equations of a layer
/// whose input becomes `x` and whose targets are linear in `g` (`T = G·W + 1·bᵀ`).
#[derive(Clone, Debug)]
pub struct NormalEquations {
    /// `(d+1)²`: the new inputs' second moments, the last row and column their sums.
    gram: Array2<f64>,
    /// `(d+1) × k`: cross moments of the new inputs with the old ones.
    cross: Array2<f64>,
    pub rows: usize,
}

impl NormalEquations {
    pub fn new(inputs: usize, old_inputs: usize) -> NormalEquations {
        NormalEquations {
            gram: Array2::zeros((inputs + 1, inputs + 1)),
            cross: Array2::zeros((inputs + 1, old_inputs)),
            rows: 0,
        }
    }

    /// The new layer's input width `d`.
    pub fn inputs(&self) -> usize {
        self.gram.nrows() - 1
    }

    /// Adds rows: `x` (n × d) the new layer inputs, `g` (n × k) the old ones. The products
    /// are taken in `f32` blocks (matrix products) and summed in `f64`.
    pub fn add(&mut self, x: ArrayView2<f32>, g: ArrayView2<f32>) {
        let (n, d) = x.dim();
        assert_eq!(n, g.nrows(), "as many old rows as new");
        let mut a = Array2::<f32>::ones((n, d + 1));
        a.slice_mut(s![.., ..d]).assign(&x);
        // Row blocks keep each f32 sum short (relative error ~ block · 2⁻²⁴).
        const BLOCK: usize = 256;
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            let ab = a.slice(s![start..end, ..]);
            let gb = g.slice(s![start..end, ..]);
            let gram = ab.t().dot(&ab);
            let cross = ab.t().dot(&gb);
            self.gram.zip_mut_with(&gram, |s, &v| *s += v as f64);
            self.cross.zip_mut_with(&cross, |s, &v| *s += v as f64);
            start = end;
        }
        self.rows += n;
    }

    /// The ridge solution for the old layer `T = G·w + bias` (`w`: k × m, `bias`: m), with
    /// `λ = ridge · mean(diag(XᵀX))` pulling the weight rows toward `w` when `x = g` would
    /// make `w` exact. Returns the new weight (d × m) and bias (m).
    pub fn solve(
        &self,
        w: ArrayView2<f64>,
        bias: &[f64],
        ridge: f64,
    ) -> Result<(Array2<f64>, Vec<f64>)> {
        let d = self.gram.nrows() - 1;
        let m = w.ncols();
        if w.nrows() != self.cross.ncols() || bias.len() != m {
            return Err(Error::Unsupported(format!(
                "refit: weight {:?} and bias {} do not fit cross moments {:?}",
                w.dim(),
                bias.len(),
                self.cross.dim()
            )));
        }
        if w.nrows() != d {
            return Err(Error::Unsupported(
                "refit: the ridge pulls toward the old weight, which needs as many rows as inputs"
                    .into(),
            ));
        }
        // Right side: AᵀT + λ·[W₀; 0] with AᵀT = AᵀG·W + (Aᵀ1)·bᵀ, Aᵀ1 the gram's last column.
        let mut rhs = self.cross.dot(&w);
        let sums = self.gram.column(d).to_owned();
        for (mut row, &s) in rhs.axis_iter_mut(Axis(0)).zip(&sums) {
            row.iter_mut().zip(bias).for_each(|(r, &b)| *r += s * b);
        }
        let mean_diag = (0..d).map(|i| self.gram[[i, i]]).sum::<f64>() / d.max(1) as f64;
        let lambda = ridge * mean_diag.max(f64::MIN_POSITIVE);
        let mut system = self.gram.clone();
        for i in 0..d {
            system[[i, i]] += lambda;
            for j in 0..m {
                rhs[[i, j]] += lambda * w[[i, j]];
            }
        }
        // The bias row needs a pivot even with no rows (a zero-sample refit keeps b).
        if system[[d, d]] <= 0.0 {
            system[[d, d]] = 1.0;
            rhs.row_mut(d).assign(&ndarray::ArrayView1::from(bias));
        }
        cholesky_in_place(&mut system)?;
        solve_cholesky(&system, &mut rhs);
        let bias = rhs.row(d).to_vec();
        Ok((rhs.slice(s![..d, ..]).to_owned(), bias))
    }
}

/// Overwrites the lower triangle of a symmetric positive definite matrix with `L`, `LLᵀ = M`
/// (blocked right-looking: the trailing updates are matrix products). The upper triangle is
/// left as it was.
pub fn cholesky_in_place(m: &mut Array2<f64>) -> Result<()> {
    let n = m.nrows();
    const BLOCK: usize = 64;
    let mut k = 0;
    while k < n {
        let e = (k + BLOCK).min(n);
        // The diagonal block, unblocked.
        for j in k..e {
            let mut diag = m[[j, j]];
            for p in k..j {
                diag -= m[[j, p]] * m[[j, p]];
            }
            if !(diag > 0.0) || !diag.is_finite() {
                return Err(Error::Unsupported(format!(
                    "refit: the normal equations are not positive definite (pivot {j}: {diag:e})"
                )));
            }
            let diag = diag.sqrt();
            m[[j, j]] = diag;
            for i in j + 1..e {
                let mut v = m[[i, j]];
                for p in k..j {
                    v -= m[[i, p]] * m[[j, p]];
                }
                m[[i, j]] = v / diag;
            }
        }
        if e < n {
            // The panel below: L21 = M21 · L11⁻ᵀ, row by row.
            for i in e..n {
                for j in k..e {
                    let mut v = m[[i, j]];
                    for p in k..j {
                        v -= m[[i, p]] * m[[j, p]];
                    }
                    m[[i, j]] = v / m[[j, j]];
                }
            }
            // The trailing matrix: M22 −= L21·L21ᵀ (the whole block; only its lower part is
            // read later).
            let panel = m.slice(s![e.., k..e]).to_owned();
            let update = panel.dot(&panel.t());
            m.slice_mut(s![e.., e..])
                .zip_mut_with(&update, |x, &u| *x -= u);
        }
        k = e;
    }
    Ok(())
}

/// Solves `LLᵀ·X = B` in place of `B`, with `L` the lower triangle of `l`.
pub fn solve_cholesky(l: &Array2<f64>, b: &mut Array2<f64>) {
    let n = l.nrows();
    let cols = b.ncols();
    let mut x = b.as_standard_layout().to_owned();
    let rows = x.as_slice_mut().expect("standard layout");
    // L·Y = B, forward: row i −= L[i,p]·row p.
    for i in 0..n {
        let (done, rest) = rows.split_at_mut(i * cols);
        let row = &mut rest[..cols];
        for p in 0..i {
            let f = l[[i, p]];
            if f != 0.0 {
                let src = &done[p * cols..(p + 1) * cols];
                row.iter_mut().zip(src).for_each(|(r, &s)| *r -= f * s);
            }
        }
        let d = l[[i, i]];
        row.iter_mut().for_each(|v| *v /= d);
    }
    // Lᵀ·X = Y, backward: row p −= L[i,p]·row i.
    for i in (0..n).rev() {
        let (before, rest) = rows.split_at_mut(i * cols);
        let row = &mut rest[..cols];
        let d = l[[i, i]];
        row.iter_mut().for_each(|v| *v /= d);
        for p in 0..i {
            let f = l[[i, p]];
            if f != 0.0 {
                let dst = &mut before[p * cols..(p + 1) * cols];
                dst.iter_mut()
                    .zip(row.iter())
                    .for_each(|(r, &s)| *r -= f * s);
            }
        }
    }
    b.assign(&x);
}
