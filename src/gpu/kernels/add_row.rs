//! Host wrappers of `shaders/add_row.wgsl`: h[B, H] = x[B, H] + src[row, :] (the tape's
//! `Op::AddRow` forward) and its VJP with respect to src, acc[row, :] += Σ_b dy[b, :]
//! (`Kernels::col_sum_acc` on one row). Plain f32 adds in the CPU's order: bitwise equal to the CPU.

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};

/// Threads per workgroup in add_row.wgsl (`@workgroup_size`, `WG`): one element (add_row) or
/// one column (col_sum_into_row) each.
pub const WORKGROUP_SIZE: u32 = 64;

/// `add_row.wgsl` `AddRowParams`: x / h / dy are [rows, cols]; src / acc are [T, cols] and
/// `row` < T is the row read (add_row) or accumulated into (col_sum_into_row).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AddRowParams {
    pub rows: u32,
    pub cols: u32,
    pub row: u32,
    pub _pad: u32,
}

pub static ADD_ROW: EntryPoint = EntryPoint {
    shader: Shader::AddRow,
    name: "add_row",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (3, StorageReadWrite),
    ],
};

pub static COL_SUM_INTO_ROW: EntryPoint = EntryPoint {
    shader: Shader::AddRow,
    name: "col_sum_into_row",
    bindings: &[(0, Uniform), (4, StorageRead), (5, StorageReadWrite)],
};

/// Checks the shapes shared by both entry points and builds the params.
fn params(
    what: &str,
    batch: usize,
    table: usize,
    rows: usize,
    cols: usize,
    row: usize,
) -> AddRowParams {
    assert!(cols > 0, "gpu {what}: cols = 0");
    assert_eq!(batch, rows * cols, "gpu {what}: batch length != rows·cols");
    assert_eq!(
        table % cols,
        0,
        "gpu {what}: table length is not a multiple of cols"
    );
    assert!(
        row < table / cols,
        "gpu {what}: row {row} out of range (table has {} rows)",
        table / cols
    );
    to_u32(table, "gpu add_row: table length");
    AddRowParams {
        rows: to_u32(rows, "gpu add_row: rows"),
        cols: to_u32(cols, "gpu add_row: cols"),
        row: to_u32(row, "gpu add_row: row"),
        _pad: 0,
    }
}

/// h[b, j] = x[b, j] + src[row·cols + j]; x and h are [rows, cols] (h overwritten, distinct
/// from x), src is [T, cols].
pub fn prepare_add_row(
    ctx: &GpuContext,
    x: &GpuVec,
    src: &GpuVec,
    h: &GpuVec,
    rows: usize,
    cols: usize,
    row: usize,
) -> Result<Dispatch, GpuError> {
    let p = params("add_row", x.len(), src.len(), rows, cols, row);
    assert_eq!(h.len(), x.len(), "gpu add_row: h.len() != x.len()");
    let n = to_u32(rows * cols, "gpu add_row: rows·cols");
    let pb = params_buffer(ctx, &p, "AddRowParams");
    dispatch(
        ctx,
        &ADD_ROW,
        &[
            (0, &pb),
            (1, x.buffer()),
            (2, src.buffer()),
            (3, h.buffer()),
        ],
        grid_1d(n.div_ceil(WORKGROUP_SIZE)),
    )
}

/// acc[row·cols + j] += Σ_b dy[b, j], b ascending from the slot's current value; dy is
/// [rows, cols], acc is [T, cols] (only row `row` changes).
pub fn prepare_col_sum_into_row(
    ctx: &GpuContext,
    dy: &GpuVec,
    acc: &GpuVec,
    rows: usize,
    cols: usize,
    row: usize,
) -> Result<Dispatch, GpuError> {
    let p = params("col_sum_into_row", dy.len(), acc.len(), rows, cols, row);
    let pb = params_buffer(ctx, &p, "AddRowParams");
    dispatch(
        ctx,
        &COL_SUM_INTO_ROW,
        &[(0, &pb), (4, dy.buffer()), (5, acc.buffer())],
        grid_1d(p.cols.div_ceil(WORKGROUP_SIZE)),
    )
}

/// Records [`prepare_add_row`] into `encoder`.
#[allow(clippy::too_many_arguments)]
pub fn call_add_row(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuVec,
    src: &GpuVec,
    h: &GpuVec,
    rows: usize,
    cols: usize,
    row: usize,
) -> Result<(), GpuError> {
    prepare_add_row(ctx, x, src, h, rows, cols, row)?.record(encoder);
    Ok(())
}

/// Records [`prepare_col_sum_into_row`] into `encoder`.
pub fn call_col_sum_into_row(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    dy: &GpuVec,
    acc: &GpuVec,
    rows: usize,
    cols: usize,
    row: usize,
) -> Result<(), GpuError> {
    prepare_col_sum_into_row(ctx, dy, acc, rows, cols, row)?.record(encoder);
    Ok(())
}

/// `Tape::add_row`'s forward on the GPU: h = x + src[row, :] per row.
pub fn run_add_row(
    ctx: &GpuContext,
    x: &[f32],
    src: &[f32],
    h: &mut [f32],
    rows: usize,
    cols: usize,
    row: usize,
) -> Result<(), GpuError> {
    assert_eq!(h.len(), x.len(), "add_row: h.len() != x.len()");
    let gx = GpuVec::from_slice(ctx, x, "x");
    let gs = GpuVec::from_slice(ctx, src, "src");
    let gh = GpuVec::zeros(ctx, h.len(), "h");
    let mut enc = ctx.encoder("run_add_row");
    call_add_row(ctx, &mut enc, &gx, &gs, &gh, rows, cols, row)?;
    ctx.submit(enc);
    h.copy_from_slice(&gh.read(ctx)?);
    Ok(())
}

/// `Kernels::col_sum_acc(dy, &mut acc[row·cols..(row+1)·cols], rows, cols)` on the GPU
/// (accumulates into `acc`, [T, cols]).
pub fn run_col_sum_into_row(
    ctx: &GpuContext,
    dy: &[f32],
    acc: &mut [f32],
    rows: usize,
    cols: usize,
    row: usize,
) -> Result<(), GpuError> {
    let gdy = GpuVec::from_slice(ctx, dy, "dy");
    let gacc = GpuVec::from_slice(ctx, acc, "acc");
    let mut enc = ctx.encoder("run_col_sum_into_row");
    call_col_sum_into_row(ctx, &mut enc, &gdy, &gacc, rows, cols, row)?;
    ctx.submit(enc);
    acc.copy_from_slice(&gacc.read(ctx)?);
    Ok(())
}
