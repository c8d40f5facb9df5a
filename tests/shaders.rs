//! Shader checks that need no GPU (house rule §3.3–3.4):
//! 1. every `shaders/*.wgsl` parses and validates with naga (all capabilities), as assembled for
//!    the device — the `math.wgsl` prelude prepended where the header says `Prelude: math.wgsl`;
//! 2. (feature `gpu`) the sources compiled into the crate (`gpu::shaders::Shader::source`) are
//!    exactly those assemblies, and every file has a `Shader`;
//! 3. (feature `gpu`) every `<Op>Params` Rust struct has the size and field offsets of naga's
//!    layout of the WGSL struct of the same name, and every WGSL `*Params` struct has a Rust twin;
//! 4. (feature `gpu`) every host binding table (`EntryPoint::bindings`) lists exactly the globals
//!    its entry point uses, with the declared address space/access, and the host's workgroup
//!    sizes equal the shaders' `@workgroup_size`.

use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use std::path::{Path, PathBuf};

fn shader_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders")
}

/// (stem, file text) of every `shaders/*.wgsl`, sorted by stem.
fn shader_files() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(shader_dir())
        .expect("read shaders/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("read shader");
            (stem, text)
        })
        .collect();
    out.sort();
    out
}

/// True when the header (the leading `//` block) has a line `// Prelude: math.wgsl …`.
fn wants_math_prelude(text: &str) -> bool {
    text.lines()
        .take_while(|l| l.starts_with("//"))
        .filter_map(|l| l.trim_start_matches('/').trim().strip_prefix("Prelude:"))
        .any(|rest| rest.trim_start().starts_with("math.wgsl"))
}

/// The module text handed to the device: prelude + file, or the file alone.
fn assembled(stem: &str, text: &str) -> String {
    if stem != "math" && wants_math_prelude(text) {
        let math = std::fs::read_to_string(shader_dir().join("math.wgsl")).expect("math.wgsl");
        format!("{math}{text}")
    } else {
        text.to_string()
    }
}

fn parse_and_validate(name: &str, src: &str) -> (naga::Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(src)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: naga validation error:\n{}", e.emit_to_string(src)));
    (module, info)
}

#[test]
fn every_shader_parses_and_validates() {
    let files = shader_files();
    assert!(
        files.iter().any(|(s, _)| s == "linear"),
        "no shaders found in {}",
        shader_dir().display()
    );
    for (stem, text) in &files {
        // every file opens with the header the house style asks for
        for key in ["Bindings", "Matches:", "Tested by:"] {
            assert!(
                text.lines()
                    .take_while(|l| l.starts_with("//"))
                    .any(|l| l.contains(key)),
                "{stem}.wgsl: header lacks a `{key}` line"
            );
        }
        let (module, _) = parse_and_validate(stem, &assembled(stem, text));
        if stem == "math" {
            assert!(module.entry_points.is_empty(), "math.wgsl is a prelude");
        } else {
            assert!(
                !module.entry_points.is_empty(),
                "{stem}.wgsl has no entry point"
            );
        }
    }
}

#[cfg(feature = "gpu")]
mod with_host {
    use super::*;
    use diffusion_samplers::gpu::buffers::PARAMS_LAYOUTS;
    use diffusion_samplers::gpu::kernels::{self, ALL_ENTRY_POINTS};
    use diffusion_samplers::gpu::pipelines::BindingKind;
    use diffusion_samplers::gpu::shaders::Shader;
    use naga::{AddressSpace, StorageAccess, TypeInner};

    fn module_of(shader: Shader) -> (naga::Module, ModuleInfo) {
        parse_and_validate(shader.name(), shader.source())
    }

    #[test]
    fn compiled_sources_are_the_files() {
        let files = shader_files();
        for (stem, text) in &files {
            if stem == "math" {
                continue;
            }
            let shader = Shader::ALL
                .into_iter()
                .find(|s| s.name() == stem)
                .unwrap_or_else(|| panic!("shaders/{stem}.wgsl has no gpu::shaders::Shader"));
            assert_eq!(shader.file_source(), text, "{stem}: include_str! is stale");
            assert_eq!(
                shader.uses_math_prelude(),
                wants_math_prelude(text),
                "{stem}: Shader::uses_math_prelude disagrees with the header"
            );
            assert_eq!(
                shader.source(),
                assembled(stem, text),
                "{stem}: Shader::source is not prelude + file"
            );
        }
        assert_eq!(
            files.len() - 1,
            Shader::ALL.len(),
            "a Shader without a file"
        );
    }

    #[test]
    fn params_structs_match_naga_layout() {
        for shader in Shader::ALL {
            let (module, _) = module_of(shader);
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).expect("layout");
            for (handle, ty) in module.types.iter() {
                let Some(name) = ty.name.as_deref() else {
                    continue;
                };
                let TypeInner::Struct { members, .. } = &ty.inner else {
                    continue;
                };
                if !name.ends_with("Params") {
                    continue;
                }
                let rust = PARAMS_LAYOUTS
                    .iter()
                    .find(|p| p.name == name)
                    .unwrap_or_else(|| panic!("WGSL struct {name} has no Rust twin"));
                assert_eq!(rust.shader, shader, "{name} is declared in another shader");
                let size = layouter[handle].size as usize;
                assert_eq!(
                    rust.size, size,
                    "{name}: Rust size {} != WGSL {size}",
                    rust.size
                );
                assert_eq!(
                    size % 16,
                    0,
                    "{name}: uniform structs must be a multiple of 16"
                );
                let wgsl: Vec<(&str, usize)> = members
                    .iter()
                    .map(|m| (m.name.as_deref().unwrap_or("?"), m.offset as usize))
                    .collect();
                assert_eq!(
                    rust.fields,
                    wgsl.as_slice(),
                    "{name}: fields/offsets differ"
                );
            }
        }
        // and every Rust params struct is used by its shader
        for p in PARAMS_LAYOUTS {
            let (module, _) = module_of(p.shader);
            assert!(
                module
                    .types
                    .iter()
                    .any(|(_, t)| t.name.as_deref() == Some(p.name)),
                "{} not declared in {}.wgsl",
                p.name,
                p.shader.name()
            );
        }
    }

    #[test]
    fn binding_tables_match_naga_reflection() {
        for shader in Shader::ALL {
            let (module, info) = module_of(shader);
            for (i, ep) in module.entry_points.iter().enumerate() {
                let host = ALL_ENTRY_POINTS
                    .iter()
                    .find(|e| e.shader == shader && e.name == ep.name)
                    .unwrap_or_else(|| {
                        panic!("{}::{} has no host EntryPoint", shader.name(), ep.name)
                    });
                let fi = info.get_entry_point(i);
                let mut used: Vec<(u32, BindingKind)> = module
                    .global_variables
                    .iter()
                    .filter(|(h, _)| !fi[*h].is_empty())
                    .filter_map(|(_, var)| {
                        let rb = var.binding.as_ref()?;
                        assert_eq!(rb.group, 0, "{}: only group 0 is used", ep.name);
                        let kind = match var.space {
                            AddressSpace::Uniform => BindingKind::Uniform,
                            AddressSpace::Storage { access } => {
                                if access.contains(StorageAccess::STORE) {
                                    BindingKind::StorageReadWrite
                                } else {
                                    BindingKind::StorageRead
                                }
                            }
                            other => panic!("{}: unexpected address space {other:?}", ep.name),
                        };
                        Some((rb.binding, kind))
                    })
                    .collect();
                used.sort_by_key(|b| b.0);
                assert_eq!(
                    host.bindings,
                    used.as_slice(),
                    "{}::{}: host binding table != the globals the entry point uses",
                    shader.name(),
                    ep.name
                );
                let wg: u32 = ep.workgroup_size.iter().product();
                let host_wg = match shader {
                    Shader::Linear => kernels::linear::WORKGROUP_SIZE,
                    Shader::Gelu => kernels::gelu::WORKGROUP_SIZE,
                    Shader::Reduce => kernels::reduce::WORKGROUP_SIZE,
                    Shader::TimeFeatures => kernels::time_features::WORKGROUP_SIZE,
                    Shader::AddRow => kernels::add_row::WORKGROUP_SIZE,
                    Shader::Clip => kernels::clip::WORKGROUP_SIZE,
                    Shader::Losses => kernels::losses::WORKGROUP_SIZE,
                    Shader::Adam => kernels::adam::WORKGROUP_SIZE,
                    Shader::EmStep => kernels::em_step::WORKGROUP_SIZE,
                    Shader::Energies => kernels::energies::WORKGROUP_SIZE,
                    Shader::ChaCha => kernels::chacha::WORKGROUP_SIZE,
                    Shader::PolicyStep => kernels::policy_step::WORKGROUP_SIZE,
                    Shader::Transpose => kernels::transpose::WORKGROUP_SIZE,
                    Shader::LayerNorm => kernels::layer_norm::WORKGROUP_SIZE,
                };
                assert_eq!(wg, host_wg, "{}: @workgroup_size != host constant", ep.name);
            }
            assert_eq!(
                ALL_ENTRY_POINTS
                    .iter()
                    .filter(|e| e.shader == shader)
                    .count(),
                module.entry_points.len(),
                "{}: a host EntryPoint names no WGSL entry point",
                shader.name()
            );
        }
        assert_eq!(
            kernels::reduce::CHUNK,
            4 * kernels::reduce::WORKGROUP_SIZE as usize,
            "reduce: CHUNK = TPB·ITEMS"
        );
    }
}

/// `const NAME: f32 = <hex float>; // 0xXXXXXXXX …`: naga must read the literal as exactly the
/// bit pattern in the comment (the pattern src/cpu/math.rs uses), so no constant is rounded.
#[test]
fn float_constants_have_the_commented_bits() {
    let mut checked = 0;
    for (stem, text) in shader_files() {
        let (module, _) = parse_and_validate(&stem, &assembled(&stem, &text));
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("const ") else {
                continue;
            };
            let Some((name, _)) = rest.split_once(": f32 =") else {
                continue;
            };
            let Some((_, comment)) = line.split_once("// 0x") else {
                continue;
            };
            let want = u32::from_str_radix(&comment[..8], 16).expect("8 hex digits");
            let (_, c) = module
                .constants
                .iter()
                .find(|(_, c)| c.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{stem}: constant {name} not in the module"));
            let got = match module.global_expressions[c.init] {
                naga::Expression::Literal(naga::Literal::F32(v)) => v.to_bits(),
                ref other => panic!("{stem}: {name} is not an f32 literal: {other:?}"),
            };
            assert_eq!(
                got, want,
                "{stem}: {name} = {got:#010x}, comment says {want:#010x}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} commented constants found");
}
