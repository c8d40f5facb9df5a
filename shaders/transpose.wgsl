// transpose.wgsl — copy a row-major [O, K] block into a larger buffer as its transpose [K, O].
//
// Purpose:   transpose_into: dst[offset + p·O + j] = src[j·K + p]. The fused rollout step reads
//            its forward weights transposed (W_ᵀ [K, O]) so that threads computing consecutive
//            outputs j read consecutive addresses (coalesced on GPUs, vector loads on lavapipe);
//            the trainer packs them with one dispatch per weight block each iteration.
// Bindings (group 0):
//   0  params : uniform TransposeParams
//   1  src    : storage, read       [O, K]
//   2  dst    : storage, read_write [≥ offset + K·O]
// Workgroup: 64 threads, one element each, flat index p·O + j over a 2-D grid (x ≤ 65535
//            workgroups), bounds-checked against O·K.
// Matches:   a plain transpose (no arithmetic: bitwise on any device).
// Tested by: tests/gpu_fused_step.rs transpose_into_matches_the_host_transpose, and through the
//            fused step's bitwise test.

struct TransposeParams {
    o: u32,
    k: u32,
    offset: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: TransposeParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn transpose_into(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * (nwg.x * WG);
    let o = params.o;
    if (idx >= o * params.k) {
        return;
    }
    let p = idx / o;
    let j = idx % o;
    dst[params.offset + idx] = src[j * params.k + p];
}
