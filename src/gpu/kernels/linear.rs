//! Host wrappers of `shaders/linear.wgsl`: y = x·wᵀ + b, dx = dy·w, dw += dyᵀ·x, db += Σ dy.
//!
//! Shapes as in `cpu::linear`: x [B, K], w [O, K], b [O], y [B, O], dy [B, O], dx [B, K],
//! dw [O, K], db [O]; B = `rows`. Each output element is one sequential fma chain in the CPU
//! order, so results are bitwise `cpu::Kernels::linear_*` where the device's fma is fused.
//! K ≥ 1 and O ≥ 1 (asserted); B = 0 records nothing.

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GpuVec, LinearParams};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};

/// Threads per workgroup in linear.wgsl (`@workgroup_size`, `WG`); each owns one 4×4 output block.
pub const WORKGROUP_SIZE: u32 = 64;

pub static LINEAR_FORWARD: EntryPoint = EntryPoint {
    shader: Shader::Linear,
    name: "linear_forward",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (3, StorageRead),
        (4, StorageReadWrite),
    ],
};

pub static LINEAR_BACKWARD_DX: EntryPoint = EntryPoint {
    shader: Shader::Linear,
    name: "linear_backward_dx",
    bindings: &[
        (0, Uniform),
        (2, StorageRead),
        (5, StorageRead),
        (6, StorageReadWrite),
    ],
};

pub static LINEAR_BACKWARD_DW: EntryPoint = EntryPoint {
    shader: Shader::Linear,
    name: "linear_backward_dw",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (5, StorageRead),
        (7, StorageReadWrite),
        (8, StorageReadWrite),
    ],
};

pub static LINEAR_BACKWARD_DW_PARTIAL: EntryPoint = EntryPoint {
    shader: Shader::Linear,
    name: "linear_backward_dw_partial",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (5, StorageRead),
        (9, StorageReadWrite),
        (10, StorageReadWrite),
    ],
};

pub static LINEAR_BACKWARD_DW_REDUCE: EntryPoint = EntryPoint {
    shader: Shader::Linear,
    name: "linear_backward_dw_reduce",
    bindings: &[
        (0, Uniform),
        (7, StorageReadWrite),
        (8, StorageReadWrite),
        (9, StorageReadWrite),
        (10, StorageReadWrite),
    ],
};

/// Chunks of `chunk` rows covering `rows` (the C of the split-K partial buffers).
pub fn split_chunks(rows: usize, chunk: usize) -> usize {
    assert!(chunk >= 1, "gpu linear: chunk must be ≥ 1");
    rows.div_ceil(chunk)
}

/// Split-K dw[O,K] += dy[B,O]ᵀ·x[B,K], db[O] += Σ_r dy: pass 1 writes per-chunk partial sums
/// (part_w [C, O, K], part_b [C, O], C = [`split_chunks`]), pass 2 adds them in chunk order.
/// For products over many rows (a rollout's T·B), where one chain per dw element would leave
/// the device nearly idle. x may hold more than B rows (the first B are used).
#[allow(clippy::too_many_arguments)]
pub fn prepare_linear_backward_dw_split(
    ctx: &GpuContext,
    dy: &GpuVec,
    x: &GpuVec,
    dw: &GpuVec,
    db: &GpuVec,
    part_w: &GpuVec,
    part_b: &GpuVec,
    rows: usize,
    k: usize,
    o: usize,
    chunk: usize,
) -> Result<[Dispatch; 2], GpuError> {
    let mut p = params(rows, k, o);
    p.chunk = to_u32(chunk.max(1), "chunk");
    let chunks = split_chunks(rows, chunk.max(1));
    check("dy", dy, rows * o);
    assert!(
        x.len() >= rows * k,
        "gpu linear: x.len() = {} < {}",
        x.len(),
        rows * k
    );
    check("dw", dw, o * k);
    check("db", db, o);
    assert!(
        part_w.len() >= chunks * o * k,
        "gpu linear: part_w smaller than C·O·K"
    );
    assert!(
        part_b.len() >= chunks * o,
        "gpu linear: part_b smaller than C·O"
    );
    let threads = chunks * o.div_ceil(4) * k.div_ceil(4);
    let (g1, g2) = if rows == 0 {
        ([0, 0, 0], [0, 0, 0])
    } else {
        (
            grid_1d(to_u32(
                threads.div_ceil(WORKGROUP_SIZE as usize),
                "dw partial groups",
            )),
            grid_1d(to_u32(
                (o * k + o).div_ceil(WORKGROUP_SIZE as usize),
                "dw reduce groups",
            )),
        )
    };
    let pb1 = params_buffer(ctx, &p, "LinearParams");
    let pb2 = params_buffer(ctx, &p, "LinearParams");
    Ok([
        dispatch(
            ctx,
            &LINEAR_BACKWARD_DW_PARTIAL,
            &[
                (0, &pb1),
                (1, x.buffer()),
                (5, dy.buffer()),
                (9, part_w.buffer()),
                (10, part_b.buffer()),
            ],
            g1,
        )?,
        dispatch(
            ctx,
            &LINEAR_BACKWARD_DW_REDUCE,
            &[
                (0, &pb2),
                (7, dw.buffer()),
                (8, db.buffer()),
                (9, part_w.buffer()),
                (10, part_b.buffer()),
            ],
            g2,
        )?,
    ])
}

fn params(rows: usize, k: usize, o: usize) -> LinearParams {
    assert!(
        k >= 1 && o >= 1,
        "gpu linear: k and o must be ≥ 1 (k = {k}, o = {o})"
    );
    let _ = to_u32(rows.max(1) * k.max(o), "gpu linear: rows·max(k, o)");
    LinearParams {
        rows: to_u32(rows, "rows"),
        k: to_u32(k, "k"),
        o: to_u32(o, "o"),
        chunk: 0,
    }
}

/// Workgroups for a grid of 4×4 blocks over an `nr` × `nc` output.
fn block_grid(nr: usize, nc: usize) -> [u32; 3] {
    let blocks = nr.div_ceil(4) * nc.div_ceil(4);
    grid_1d(to_u32(
        blocks.div_ceil(WORKGROUP_SIZE as usize),
        "linear workgroups",
    ))
}

fn check(what: &str, v: &GpuVec, want: usize) {
    assert_eq!(
        v.len(),
        want,
        "gpu linear: {what}.len() = {} != {want}",
        v.len()
    );
}

/// y[B,O] = x[B,K]·w[O,K]ᵀ + b[O] (overwrites y).
#[allow(clippy::too_many_arguments)]
pub fn prepare_linear_forward(
    ctx: &GpuContext,
    x: &GpuVec,
    w: &GpuVec,
    b: &GpuVec,
    y: &GpuVec,
    rows: usize,
    k: usize,
    o: usize,
) -> Result<Dispatch, GpuError> {
    let p = params(rows, k, o);
    check("x", x, rows * k);
    check("w", w, o * k);
    check("b", b, o);
    check("y", y, rows * o);
    let pb = params_buffer(ctx, &p, "LinearParams");
    dispatch(
        ctx,
        &LINEAR_FORWARD,
        &[
            (0, &pb),
            (1, x.buffer()),
            (2, w.buffer()),
            (3, b.buffer()),
            (4, y.buffer()),
        ],
        block_grid(rows, o),
    )
}

/// dx[B,K] = dy[B,O]·w[O,K] (overwrites dx).
pub fn prepare_linear_backward_dx(
    ctx: &GpuContext,
    dy: &GpuVec,
    w: &GpuVec,
    dx: &GpuVec,
    rows: usize,
    k: usize,
    o: usize,
) -> Result<Dispatch, GpuError> {
    let p = params(rows, k, o);
    check("dy", dy, rows * o);
    check("w", w, o * k);
    check("dx", dx, rows * k);
    let pb = params_buffer(ctx, &p, "LinearParams");
    dispatch(
        ctx,
        &LINEAR_BACKWARD_DX,
        &[
            (0, &pb),
            (2, w.buffer()),
            (5, dy.buffer()),
            (6, dx.buffer()),
        ],
        block_grid(rows, k),
    )
}

/// dw[O,K] += dy[B,O]ᵀ·x[B,K] and db[O] += Σ_r dy[r,·] (accumulates into dw and db); x may
/// hold more than B rows (the first B are used).
#[allow(clippy::too_many_arguments)]
pub fn prepare_linear_backward_dw(
    ctx: &GpuContext,
    dy: &GpuVec,
    x: &GpuVec,
    dw: &GpuVec,
    db: &GpuVec,
    rows: usize,
    k: usize,
    o: usize,
) -> Result<Dispatch, GpuError> {
    let p = params(rows, k, o);
    check("dy", dy, rows * o);
    // x may be longer (a rollout's [(T+1)·B, D] states): only its first rows·K are read.
    assert!(
        x.len() >= rows * k,
        "gpu linear: x.len() = {} < {}",
        x.len(),
        rows * k
    );
    check("dw", dw, o * k);
    check("db", db, o);
    let pb = params_buffer(ctx, &p, "LinearParams");
    // rows = 0 adds nothing: skip the launch (the shader would rewrite dw/db unchanged).
    let grid = if rows == 0 {
        [0, 0, 0]
    } else {
        block_grid(o, k)
    };
    dispatch(
        ctx,
        &LINEAR_BACKWARD_DW,
        &[
            (0, &pb),
            (1, x.buffer()),
            (5, dy.buffer()),
            (7, dw.buffer()),
            (8, db.buffer()),
        ],
        grid,
    )
}

/// Records [`prepare_linear_forward`] into `encoder`.
#[allow(clippy::too_many_arguments)]
pub fn call_linear_forward(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuVec,
    w: &GpuVec,
    b: &GpuVec,
    y: &GpuVec,
    rows: usize,
    k: usize,
    o: usize,
) -> Result<(), GpuError> {
    prepare_linear_forward(ctx, x, w, b, y, rows, k, o)?.record(encoder);
    Ok(())
}

/// Records [`prepare_linear_backward_dx`] into `encoder`.
#[allow(clippy::too_many_arguments)]
pub fn call_linear_backward_dx(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    dy: &GpuVec,
    w: &GpuVec,
    dx: &GpuVec,
    rows: usize,
    k: usize,
    o: usize,
) -> Result<(), GpuError> {
    prepare_linear_backward_dx(ctx, dy, w, dx, rows, k, o)?.record(encoder);
    Ok(())
}

/// Records [`prepare_linear_backward_dw`] into `encoder`.
#[allow(clippy::too_many_arguments)]
pub fn call_linear_backward_dw(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    dy: &GpuVec,
    x: &GpuVec,
    dw: &GpuVec,
    db: &GpuVec,
    rows: usize,
    k: usize,
    o: usize,
) -> Result<(), GpuError> {
    prepare_linear_backward_dw(ctx, dy, x, dw, db, rows, k, o)?.record(encoder);
    Ok(())
}

/// `cpu::Kernels::linear_forward` on the GPU: upload, run, read y back.
#[allow(clippy::too_many_arguments)]
pub fn run_linear_forward(
    ctx: &GpuContext,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    rows: usize,
    k: usize,
    o: usize,
) -> Result<(), GpuError> {
    let (gx, gw, gb) = (
        GpuVec::from_slice(ctx, x, "x"),
        GpuVec::from_slice(ctx, w, "w"),
        GpuVec::from_slice(ctx, b, "b"),
    );
    let gy = GpuVec::zeros(ctx, y.len(), "y");
    let mut enc = ctx.encoder("run_linear_forward");
    call_linear_forward(ctx, &mut enc, &gx, &gw, &gb, &gy, rows, k, o)?;
    ctx.submit(enc);
    y.copy_from_slice(&gy.read(ctx)?);
    Ok(())
}

/// `cpu::Kernels::linear_backward_dx` on the GPU (overwrites dx).
pub fn run_linear_backward_dx(
    ctx: &GpuContext,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    rows: usize,
    k: usize,
    o: usize,
) -> Result<(), GpuError> {
    let (gdy, gw) = (
        GpuVec::from_slice(ctx, dy, "dy"),
        GpuVec::from_slice(ctx, w, "w"),
    );
    let gdx = GpuVec::zeros(ctx, dx.len(), "dx");
    let mut enc = ctx.encoder("run_linear_backward_dx");
    call_linear_backward_dx(ctx, &mut enc, &gdy, &gw, &gdx, rows, k, o)?;
    ctx.submit(enc);
    dx.copy_from_slice(&gdx.read(ctx)?);
    Ok(())
}

/// `cpu::Kernels::linear_backward_dw` on the GPU (accumulates into dw and db).
#[allow(clippy::too_many_arguments)]
pub fn run_linear_backward_dw(
    ctx: &GpuContext,
    dy: &[f32],
    x: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    rows: usize,
    k: usize,
    o: usize,
) -> Result<(), GpuError> {
    let (gdy, gx) = (
        GpuVec::from_slice(ctx, dy, "dy"),
        GpuVec::from_slice(ctx, x, "x"),
    );
    let (gdw, gdb) = (
        GpuVec::from_slice(ctx, dw, "dw"),
        GpuVec::from_slice(ctx, db, "db"),
    );
    let mut enc = ctx.encoder("run_linear_backward_dw");
    call_linear_backward_dw(ctx, &mut enc, &gdy, &gx, &gdw, &gdb, rows, k, o)?;
    ctx.submit(enc);
    let mut out = ctx.read_many(&[&gdw, &gdb])?.into_iter();
    dw.copy_from_slice(&out.next().unwrap_or_default());
    db.copy_from_slice(&out.next().unwrap_or_default());
    Ok(())
}
