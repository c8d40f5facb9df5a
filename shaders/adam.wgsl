// adam.wgsl — global gradient-norm clipping and the Adam update, one parameter block per dispatch.
//
// Purpose:   The parameters live in separate buffers, one per block (param, grad, m, v):
//            sum_squares: partials[slot] = Σ_i grad[i]²           (one dispatch per block)
//            clip_scale:  S = Σ_k partials[k], norm = √S;          (one dispatch, after them)
//                         scale[0] = max_norm / (norm + 1e−6) if clipping and norm > max_norm,
//                                    else 1;  scale[1] = norm
//            adam_step:   per element i of one block (one dispatch per block):
//                           g = grad[i]·scale[0]
//                           m = β1·m + (1−β1)·g;  v = β2·v + ((1−β2)·g)·g
//                           denom = √v / bc2_sqrt + ε;  p = p − (step_size·m) / denom
//                         with step_size = (lr / (1 − β1^t)) and bc2_sqrt = √(1 − β2^t), both
//                         computed by the host in f64 and rounded to f32, as Adam::step does.
// Bindings (group 0; each entry point uses the subset listed):
//   0  params   : uniform AdamParams     all (each entry point reads the fields marked for it)
//   1  grad     : storage, read       [N]          sum_squares, adam_step (the block's gradient)
//   2  partials : storage, read_write [n_blocks]   sum_squares (writes slot), clip_scale (reads)
//   3  scale    : storage, read_write [2]          clip_scale (writes), adam_step (reads scale[0])
//   4  param    : storage, read_write [N]          adam_step
//   5  m        : storage, read_write [N]          adam_step
//   6  v        : storage, read_write [N]          adam_step
// Workgroup: 256 threads everywhere. sum_squares: ONE workgroup (any N ≥ 0);
//            clip_scale: one workgroup, thread 0 works; adam_step: one element per thread on a
//            2-D grid, index = gid.x + gid.y·(num_workgroups.x·256), bounds-checked.
// Order (fixed; depends only on N / n_blocks, so every run adds in the same order, no atomics):
//   sum_squares, thread t: s_t = ((0 + g_t·g_t) + g_{t+256}·g_{t+256}) + …  (i ascending, i < N)
//                tree:     for h in 128, 64, …, 1: s_t = s_t + s_{t+h} for t < h → s_0
//                (error ≤ (⌈N/256⌉ + 9)·u·Σ g², u = 2^-24)
//   clip_scale:  S = ((0 + partials[0]) + partials[1]) + … + partials[n_blocks − 1]
// Matches:   src/nn/adam.rs — adam_step: Adam::step per block, the same f32 operations in the same
//            order (the host's f64 → f32 step constants are Adam::step's), so bitwise equal given
//            the same scale on a device that neither contracts a·b + c into an fma nor rounds √
//            and ÷ other than IEEE (lavapipe); clip_grad_norm (f64 there, f32 here) within
//            the named tolerance GPU_NORM of the test; the clipped gradient is grad·scale in f32
//            as clip_grad_norm's `*g *= scale`, and scale 1 (no clipping) leaves g unchanged.
// Tested by: tests/gpu_train_ops.rs sum_squares, clip_scale, adam_step (bitwise on IEEE devices).

struct AdamParams {
    n: u32,               // sum_squares, adam_step: block length N; clip_scale: n_blocks
    slot: u32,            // sum_squares: the partials slot of this block
    clip: u32,            // clip_scale: 1 = clip to max_norm, 0 = only measure the norm
    _pad0: u32,
    max_norm: f32,        // clip_scale
    beta1: f32,           // adam_step (β1 as f32)
    one_minus_beta1: f32, // adam_step: 1 − β1 in f32 (Adam::step's `1.0 - b1`)
    beta2: f32,           // adam_step
    one_minus_beta2: f32, // adam_step: 1 − β2 in f32
    step_size: f32,       // adam_step: (lr / (1 − β1^t)) as f32
    bc2_sqrt: f32,        // adam_step: √(1 − β2^t) as f32
    eps: f32,             // adam_step: ε as f32
}

@group(0) @binding(0) var<uniform> params: AdamParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> param: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;

// 256 threads: a power of two (the tree halves it) that every WebGPU device supports.
const TPB: u32 = 256u;
// 1e-6 rounded to f32 (clip_grad_norm adds 1e-6 in f64).
const CLIP_EPS: f32 = 0x1.0c6f7ap-20f; // 0x358637bd

var<workgroup> tree: array<f32, 256>;

@compute @workgroup_size(256)
fn sum_squares(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let n = params.n;
    var s = 0.0;
    for (var i = t; i < n; i += TPB) {
        let g = grad[i];
        s = s + g * g;
    }
    tree[t] = s;
    for (var h = TPB / 2u; h > 0u; h = h / 2u) {
        workgroupBarrier();
        if (t < h) {
            tree[t] = tree[t] + tree[t + h];
        }
    }
    workgroupBarrier();
    if (t == 0u) {
        partials[params.slot] = tree[0];
    }
}

@compute @workgroup_size(256)
fn clip_scale(@builtin(local_invocation_id) lid: vec3<u32>) {
    if (lid.x != 0u) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < params.n; k++) {
        s = s + partials[k];
    }
    let norm = sqrt(s);
    var sc = 1.0;
    if (params.clip != 0u && norm > params.max_norm) {
        sc = params.max_norm / (norm + CLIP_EPS);
    }
    scale[0] = sc;
    scale[1] = norm;
}

@compute @workgroup_size(256)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * (nwg.x * TPB);
    if (i >= params.n) {
        return;
    }
    let g = grad[i] * scale[0];
    let mi = params.beta1 * m[i] + params.one_minus_beta1 * g;
    let vi = params.beta2 * v[i] + (params.one_minus_beta2 * g) * g;
    m[i] = mi;
    v[i] = vi;
    let denom = sqrt(vi) / params.bc2_sqrt + params.eps;
    param[i] = param[i] - (params.step_size * mi) / denom;
}
