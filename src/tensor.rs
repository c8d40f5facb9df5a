//! A row-major matrix: the only container the tape and the kernels pass around.

use crate::real::Real;

/// `rows × cols` values, row-major, no strides. A vector is a `1 × n` or `n × 1` tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<S> {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<S>,
}

impl<S: Real> Tensor<S> {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Tensor {
            rows,
            cols,
            data: vec![S::ZERO; rows * cols],
        }
    }

    pub fn from_vec(rows: usize, cols: usize, data: Vec<S>) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "tensor data does not match its shape {rows}×{cols}"
        );
        Tensor { rows, cols, data }
    }

    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Self {
        Self::from_vec(
            rows,
            cols,
            data.iter().map(|&v| S::from_f64(v as f64)).collect(),
        )
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn row(&self, r: usize) -> &[S] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn row_mut(&mut self, r: usize) -> &mut [S] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.iter().map(|v| v.to_f64()).collect()
    }
}
