//! Dense layer: y = x·wᵀ + b and its two backward products, scalar references.
//!
//! Shapes: x [B, K] (B rows of the batch — in the drift net B·T flattened rows — K inputs),
//! w [O, K] (row-major, one row per output, as PyTorch's `nn.Linear`), b [O], y [B, O].
//!
//! Every output element is one sequential FMA chain; the AVX2 path in [`super::avx2`] computes
//! many chains side by side (one per SIMD lane / register) but never reassociates a chain, so the
//! f32 SIMD and scalar paths are bitwise equal. The loops below are arranged for memory order
//! where that does not change any chain (the chain order is stated per function).

use crate::real::Real;

/// Panics unless the slices have the documented shapes (both paths call this first).
#[inline]
pub(crate) fn check_linear(
    x: usize,
    w: usize,
    b: usize,
    y: usize,
    rows: usize,
    k: usize,
    o: usize,
) {
    assert_eq!(x, rows * k, "linear: x.len() != rows·k");
    assert_eq!(w, o * k, "linear: w.len() != o·k");
    assert_eq!(b, o, "linear: b.len() != o");
    assert_eq!(y, rows * o, "linear: y.len() != rows·o");
}

/// y[B,O] = x[B,K]·w[O,K]ᵀ + b[O].
/// Order per output (r, j): acc = b[j]; for p in 0..K { acc = x[r,p].mul_add(w[j,p], acc) }.
#[inline]
pub fn linear_forward_ref<S: Real>(
    x: &[S],
    w: &[S],
    b: &[S],
    y: &mut [S],
    rows: usize,
    k: usize,
    o: usize,
) {
    check_linear(x.len(), w.len(), b.len(), y.len(), rows, k, o);
    if o == 0 {
        return;
    }
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        let yr = &mut y[r * o..(r + 1) * o];
        for (j, yj) in yr.iter_mut().enumerate() {
            let wj = &w[j * k..(j + 1) * k];
            let mut acc = b[j];
            for (&xv, &wv) in xr.iter().zip(wj) {
                acc = xv.mul_add(wv, acc);
            }
            *yj = acc;
        }
    }
}

/// dx[B,K] = dy[B,O]·w[O,K] (overwrites dx).
/// Order per element (r, p): acc = 0; for j in 0..O { acc = dy[r,j].mul_add(w[j,p], acc) }.
/// (Loop j outside p so w rows are read contiguously; each dx[r,p] still sees j ascending.)
#[inline]
pub fn linear_backward_dx_ref<S: Real>(
    dy: &[S],
    w: &[S],
    dx: &mut [S],
    rows: usize,
    k: usize,
    o: usize,
) {
    check_linear(dx.len(), w.len(), o, dy.len(), rows, k, o);
    if k == 0 {
        return;
    }
    for r in 0..rows {
        let dyr = &dy[r * o..(r + 1) * o];
        let dxr = &mut dx[r * k..(r + 1) * k];
        dxr.fill(S::ZERO);
        for (j, &g) in dyr.iter().enumerate() {
            let wj = &w[j * k..(j + 1) * k];
            for (d, &wv) in dxr.iter_mut().zip(wj) {
                *d = g.mul_add(wv, *d);
            }
        }
    }
}

/// dw[O,K] += dy[B,O]ᵀ·x[B,K] and db[O] += Σ_r dy[r,·] (accumulates into dw and db).
/// Order per element: acc = dw[j,p]; for r in 0..B { acc = dy[r,j].mul_add(x[r,p], acc) };
/// acc = db[j]; for r in 0..B { acc = acc + dy[r,j] } (the order of [`super::reduce::col_sum_acc_ref`]).
/// (Loop r outermost so x and dy are streamed once; each element still sees r ascending.)
#[inline]
pub fn linear_backward_dw_ref<S: Real>(
    dy: &[S],
    x: &[S],
    dw: &mut [S],
    db: &mut [S],
    rows: usize,
    k: usize,
    o: usize,
) {
    check_linear(x.len(), dw.len(), db.len(), dy.len(), rows, k, o);
    if k > 0 {
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            for (j, &g) in dy[r * o..(r + 1) * o].iter().enumerate() {
                for (d, &xv) in dw[j * k..(j + 1) * k].iter_mut().zip(xr) {
                    *d = g.mul_add(xv, *d);
                }
            }
        }
    }
    super::reduce::col_sum_acc_ref(dy, db, rows, o);
}
