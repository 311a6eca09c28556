//! Every compute pipeline, built once per device from the plain files in `shaders/`, with an
//! explicit bind-group layout per signature — the "function signature" of a GPU function:
//! binding 0 is always the kernel's uniform block, then its buffers in declaration order.

use crate::precision::Precision;

/// Which buffers a kernel binds after its uniform block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// Weight words, their f16 scales, the activation arena, the control words, and the weight
    /// words again (read as f16 by f16_native.wgsl; unused otherwise) (linear.wgsl).
    Linear,
    /// The model's f32 vectors (norm weights, biases, conv taps, A_log, Dskip) and the arena.
    Params,
    /// The arena only.
    Act,
    /// The arena and the control words (routing, sampling).
    Control,
    /// The model's f32 vectors, the arena and the control words (attention: RoPE tables,
    /// the KV cache, the position).
    ParamsControl,
    /// Training (shaders/train/): parameters, gradients + AdamW moments, activations, token
    /// and routing ids, and one layer's SSM states — all read-write.
    Train,
}

impl Signature {
    /// (read-only?) for each storage binding after the uniform.
    fn storage(self) -> &'static [bool] {
        match self {
            Signature::Linear => &[true, true, false, false, true],
            Signature::Params => &[true, false],
            Signature::Act => &[false],
            Signature::Control => &[false, false],
            Signature::ParamsControl => &[true, false, false],
            Signature::Train => &[false; 5],
        }
    }
}

/// The buffers a bind group can draw on; each signature takes the ones it names.
pub(crate) struct Bindings<'a> {
    pub uniform: wgpu::BindingResource<'a>,
    pub weights: Option<&'a super::linear::GpuMatrix>,
    pub params: &'a wgpu::Buffer,
    pub act: &'a wgpu::Buffer,
    pub ctl: &'a wgpu::Buffer,
}

impl Signature {
    /// The bind group entries of this signature, in binding order.
    pub(crate) fn resources<'a>(self, b: Bindings<'a>) -> Vec<wgpu::BindingResource<'a>> {
        let mut out = vec![b.uniform];
        match self {
            Signature::Linear => {
                let w = b.weights.expect("linear kernels bind a weight matrix");
                out.extend([
                    w.words.as_entire_binding(),
                    w.scales.as_entire_binding(),
                    b.act.as_entire_binding(),
                    b.ctl.as_entire_binding(),
                    w.words.as_entire_binding(),
                ]);
            }
            Signature::Params => out.extend([b.params.as_entire_binding(), b.act.as_entire_binding()]),
            Signature::Act => out.push(b.act.as_entire_binding()),
            Signature::Control => out.extend([b.act.as_entire_binding(), b.ctl.as_entire_binding()]),
            Signature::ParamsControl => out.extend([
                b.params.as_entire_binding(),
                b.act.as_entire_binding(),
                b.ctl.as_entire_binding(),
            ]),
            Signature::Train => unreachable!("training kernels bind through gpu::train::TrainBuffers"),
        }
        out
    }
}

pub struct Kernel {
    /// The entry point's name (with the precision for linear kernels), for profiles.
    pub label: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub signature: Signature,
}

pub struct Kernels {
    layouts: [wgpu::BindGroupLayout; 6],
    /// `matvec`, `matmul` and `embed_row` per precision, indexed by `Precision::index`.
    pub matvec: [Kernel; PRECISIONS],
    pub matmul: [Kernel; PRECISIONS],
    pub embed_row: [Kernel; PRECISIONS],
    pub rmsnorm: Kernel,
    /// Causal conv + silu and the selective scan, over 1 (decode) or T (prefill) tokens.
    pub conv: Kernel,
    pub scan: Kernel,
    pub swiglu: Kernel,
    pub route: Kernel,
    pub sample: Kernel,
    /// A Transformer layer's RoPE + KV-cache append, and its attention over the cache.
    pub rope_kv: Kernel,
    pub attention: Kernel,
}

/// linear.wgsl behind each of its two preludes (see the file's first line).
const LINEAR_PACKED_F16: &str = concat!(
    include_str!("../../../../shaders/f16_packed.wgsl"),
    include_str!("../../../../shaders/linear.wgsl")
);
const LINEAR_NATIVE_F16: &str = concat!(
    include_str!("../../../../shaders/f16_native.wgsl"),
    include_str!("../../../../shaders/linear.wgsl")
);

/// A shader whose first line names the activations prelude, behind it.
pub(crate) fn with_activations(source: &str) -> String {
    debug_assert!(source.starts_with("// Prelude: activations.wgsl"));
    [include_str!("../../../../shaders/activations.wgsl"), source].concat()
}

const PRECISIONS: usize = Precision::ALL.len();

const SIGNATURES: [Signature; 6] = [
    Signature::Linear,
    Signature::Params,
    Signature::Act,
    Signature::Control,
    Signature::ParamsControl,
    Signature::Train,
];

impl Kernels {
    /// With `native_f16` (the device has shader-f16 enabled) f16 weights are read through
    /// f16_native.wgsl, otherwise through f16_packed.wgsl (core WGSL).
    pub fn new(device: &wgpu::Device, native_f16: bool) -> Kernels {
        let layouts = SIGNATURES.map(|s| layout(device, s));
        let module = |name: &str, source: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        };
        let linear = if native_f16 {
            module("linear (shader-f16)", LINEAR_NATIVE_F16)
        } else {
            module("linear", LINEAR_PACKED_F16)
        };
        let norm = module("norm", include_str!("../../../../shaders/norm.wgsl"));
        let conv = module("conv", &with_activations(include_str!("../../../../shaders/conv.wgsl")));
        let scan = module("scan", &with_activations(include_str!("../../../../shaders/scan.wgsl")));
        let swiglu = module("swiglu", include_str!("../../../../shaders/swiglu.wgsl"));
        let moe = module("moe", include_str!("../../../../shaders/moe.wgsl"));
        let sample = module("sample", include_str!("../../../../shaders/sample.wgsl"));
        let attention = module("attention", include_str!("../../../../shaders/attention.wgsl"));

        let kernel =
            |module: &wgpu::ShaderModule, entry: &'static str, signature: Signature, precision: Option<Precision>| {
                pipeline(device, &layouts, module, entry, signature, precision)
            };
        Kernels {
            matvec: Precision::ALL.map(|p| kernel(&linear, "matvec", Signature::Linear, Some(p))),
            matmul: Precision::ALL.map(|p| kernel(&linear, "matmul", Signature::Linear, Some(p))),
            embed_row: Precision::ALL.map(|p| kernel(&linear, "embed_row", Signature::Linear, Some(p))),
            rmsnorm: kernel(&norm, "rmsnorm", Signature::Params, None),
            conv: kernel(&conv, "conv", Signature::Params, None),
            scan: kernel(&scan, "scan", Signature::Params, None),
            swiglu: kernel(&swiglu, "swiglu", Signature::Act, None),
            route: kernel(&moe, "route", Signature::Control, None),
            sample: kernel(&sample, "sample", Signature::Control, None),
            rope_kv: kernel(&attention, "rope_kv", Signature::ParamsControl, None),
            attention: kernel(&attention, "attention", Signature::ParamsControl, None),
            layouts,
        }
    }

    pub fn layout(&self, signature: Signature) -> &wgpu::BindGroupLayout {
        &self.layouts[SIGNATURES.iter().position(|&s| s == signature).unwrap()]
    }

    /// A pipeline for `entry` of `module` with this device's layout for `signature`.
    pub(crate) fn build(
        &self,
        device: &wgpu::Device,
        module: &wgpu::ShaderModule,
        entry: &'static str,
        signature: Signature,
    ) -> Kernel {
        pipeline(device, &self.layouts, module, entry, signature, None)
    }
}

fn pipeline(
    device: &wgpu::Device,
    layouts: &[wgpu::BindGroupLayout; 6],
    module: &wgpu::ShaderModule,
    entry: &'static str,
    signature: Signature,
    precision: Option<Precision>,
) -> Kernel {
    // linear.wgsl's PRECISION constant is the precision's index in `Precision::ALL`.
    let constants: Vec<(&str, f64)> = precision.map(|p| ("PRECISION", p.index() as f64)).into_iter().collect();
    let layout_index = SIGNATURES.iter().position(|&s| s == signature).unwrap();
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(entry),
        bind_group_layouts: &[Some(&layouts[layout_index])],
        immediate_size: 0,
    });
    let label = match precision {
        Some(p) => linear_label(entry, p),
        None => entry,
    };
    Kernel {
        label,
        pipeline: device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pipeline_layout),
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                ..Default::default()
            },
            cache: None,
        }),
        signature,
    }
}

/// A linear kernel's name with its precision ("matvec q4"), for profiles, which keep
/// `&'static str` labels: made once per process for every entry point and precision.
fn linear_label(entry: &'static str, p: Precision) -> &'static str {
    const ENTRIES: [&str; 3] = ["matvec", "matmul", "embed_row"];
    static LABELS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| {
        ENTRIES
            .iter()
            .flat_map(|e| Precision::ALL.map(|p| format!("{e} {p}")))
            .collect()
    });
    let e = ENTRIES
        .iter()
        .position(|&e| e == entry)
        .expect("a linear.wgsl entry point");
    &labels[e * PRECISIONS + p.index()]
}

fn layout(device: &wgpu::Device, signature: Signature) -> wgpu::BindGroupLayout {
    let visibility = wgpu::ShaderStages::COMPUTE;
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }];
    for (i, &read_only) in signature.storage().iter().enumerate() {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: i as u32 + 1,
            visibility,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(&format!("{signature:?}")),
        entries: &entries,
    })
}
