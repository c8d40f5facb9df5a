// reduce.wgsl — fixed-order segmented sum: S segments of N contiguous f32 each → S sums.
//
// Purpose:   Σ over each segment in ONE documented order that depends only on N (not on the
//            device, its subgroup size or scheduling): a workgroup tree plus a second pass, no
//            atomics, so repeated runs on any device are bitwise identical to each other.
//            (Per-trajectory sums over T, the batch sum of a loss, … are all segmented sums.)
// Bindings (group 0):
//   0  params   : uniform ReduceParams
//   1  x        : storage, read       [S, N]       sum_partials (pass 1)
//   2  partials : storage, read_write [S, G]       written by pass 1, read by pass 2
//   3  out      : storage, read_write [S]          sum_finish (pass 2)
//   G = params.groups = ⌈N / CHUNK⌉ workgroups per segment in pass 1.
// Workgroup: 256 threads; pass 1 grid (G, S), pass 2 grid (1, S); S ≤ 65535 per dispatch.
// Order (TPB = 256 threads, ITEMS = 4, CHUNK = TPB·ITEMS = 1024):
//   pass 1, workgroup g of segment s, thread t (c0 = g·CHUNK, the segment's element i is
//   x[s·N + i], out-of-range elements count as nothing):
//     v_t = ((x[c0+t] + x[c0+t+256]) + x[c0+t+512]) + x[c0+t+768]   (left to right, from the first
//                                                                     in-range term; 0 if none)
//     tree: for h in 128, 64, …, 1: v_t = v_t + v_{t+h} for t < h  → partials[s·G + g] = v_0
//   pass 2, segment s, thread t:
//     v_t = partials[s·G + t] + partials[s·G + t + 256] + …  (ascending, left to right; 0 if none)
//     the same tree → out[s] = v_0
//   The tree is in workgroup memory with a barrier per level (no subgroup operations), so its
//   shape is fixed at 256. Empty slots hold +0.0, and x + 0.0 = x for every x but −0.0, so the
//   result is the order above on the in-range terms only (a sum of all −0.0 gives +0.0).
// Matches:   the exact Σ (an f64 sum) within tolerance GPU_SUM — NOT cpu::Kernels::sum bitwise:
//            the CPU order (8 running lanes) is a different fixed order. Error bound of this
//            order: (4 + 8 + ⌈G/256⌉ + 8)·u·Σ|x| (u = 2^-24), far below the sequential n·u bound.
// Tested by: tests/cpu_vs_gpu.rs sum_* (and repeated runs bitwise equal).

struct ReduceParams {
    n: u32,        // segment length N
    segments: u32, // S
    groups: u32,   // G = ⌈N / CHUNK⌉ (pass-1 workgroups per segment)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: ReduceParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// 256 threads: a power of two (the tree halves it) that every WebGPU device supports
// (maxComputeInvocationsPerWorkgroup ≥ 256).
const TPB: u32 = 256u;
const ITEMS: u32 = 4u;
const CHUNK: u32 = 1024u; // TPB · ITEMS

var<workgroup> tree: array<f32, 256>;

// Sums tree[0..256] into tree[0] by halving; every thread calls it (barriers are uniform).
fn tree_reduce(t: u32) {
    for (var h = TPB / 2u; h > 0u; h = h / 2u) {
        workgroupBarrier();
        if (t < h) {
            tree[t] = tree[t] + tree[t + h];
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn sum_partials(@builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(workgroup_id) wid: vec3<u32>) {
    let t = lid.x;
    let g = wid.x;
    let s = wid.y;
    let n = params.n;
    let base = s * n;
    var v = 0.0;
    for (var i = 0u; i < ITEMS; i++) {
        let e = g * CHUNK + i * TPB + t;
        if (e < n) {
            v = select(v + x[base + e], x[base + e], i == 0u);
        }
    }
    tree[t] = v;
    tree_reduce(t);
    if (t == 0u) {
        partials[s * params.groups + g] = tree[0];
    }
}

@compute @workgroup_size(256)
fn sum_finish(@builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(workgroup_id) wid: vec3<u32>) {
    let t = lid.x;
    let s = wid.y;
    let gs = params.groups;
    let base = s * gs;
    var v = 0.0;
    for (var i = t; i < gs; i += TPB) {
        v = select(v + partials[base + i], partials[base + i], i == t);
    }
    tree[t] = v;
    tree_reduce(t);
    if (t == 0u) {
        out[s] = tree[0];
    }
}
