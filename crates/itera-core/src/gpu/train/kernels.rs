//! The training pipelines (shaders/train/), built on first use so that inference — the page's
//! WebGPU setup above all — never compiles them.

use crate::gpu::kernels::{with_activations, Kernel, Kernels, Signature};

pub struct TrainKernels {
    pub gemm: Kernel,
    pub rmsnorm_forward: Kernel,
    pub rmsnorm_backward: Kernel,
    pub rmsnorm_weight_grad: Kernel,
    pub conv_forward: Kernel,
    pub conv_backward_input: Kernel,
    pub conv_backward_weight: Kernel,
    pub scan_forward: Kernel,
    pub scan_backward: Kernel,
    pub state_reduce: Kernel,
    pub pointwise: Kernel,
    pub colsum: Kernel,
    pub route_forward: Kernel,
    pub aux_forward: Kernel,
    pub route_dot: Kernel,
    pub route_backward: Kernel,
    pub softmax_loss: Kernel,
    pub loss_total: Kernel,
    pub embed_forward: Kernel,
    pub embed_backward: Kernel,
    pub sum_squares: Kernel,
    pub sum_squares_total: Kernel,
    pub adamw: Kernel,
}

impl TrainKernels {
    pub fn new(device: &wgpu::Device, kernels: &Kernels) -> TrainKernels {
        let module = |name: &str, source: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        };
        let gemm = module("gemm", include_str!("../../../../../shaders/train/gemm.wgsl"));
        let norm = module("train norm", include_str!("../../../../../shaders/train/norm.wgsl"));
        let ssm = module(
            "train ssm",
            &with_activations(include_str!("../../../../../shaders/train/ssm.wgsl")),
        );
        let pointwise = module(
            "pointwise",
            &with_activations(include_str!("../../../../../shaders/train/pointwise.wgsl")),
        );
        let moe = module("train moe", include_str!("../../../../../shaders/train/moe.wgsl"));
        let loss = module("loss", include_str!("../../../../../shaders/train/loss.wgsl"));
        let embed = module("train embed", include_str!("../../../../../shaders/train/embed.wgsl"));
        let adamw = module("adamw", include_str!("../../../../../shaders/train/adamw.wgsl"));
        let k = |m: &wgpu::ShaderModule, entry: &'static str| kernels.build(device, m, entry, Signature::Train);
        TrainKernels {
            gemm: k(&gemm, "gemm"),
            rmsnorm_forward: k(&norm, "rmsnorm_forward"),
            rmsnorm_backward: k(&norm, "rmsnorm_backward"),
            rmsnorm_weight_grad: k(&norm, "rmsnorm_weight_grad"),
            conv_forward: k(&ssm, "conv_forward"),
            conv_backward_input: k(&ssm, "conv_backward_input"),
            conv_backward_weight: k(&ssm, "conv_backward_weight"),
            scan_forward: k(&ssm, "scan_forward"),
            scan_backward: k(&ssm, "scan_backward"),
            state_reduce: k(&ssm, "state_reduce"),
            pointwise: k(&pointwise, "pointwise"),
            colsum: k(&pointwise, "colsum"),
            route_forward: k(&moe, "route_forward"),
            aux_forward: k(&moe, "aux_forward"),
            route_dot: k(&moe, "route_dot"),
            route_backward: k(&moe, "route_backward"),
            softmax_loss: k(&loss, "softmax_loss"),
            loss_total: k(&loss, "loss_total"),
            embed_forward: k(&embed, "embed_forward"),
            embed_backward: k(&embed, "embed_backward"),
            sum_squares: k(&adamw, "sum_squares"),
            sum_squares_total: k(&adamw, "sum_squares_total"),
            adamw: k(&adamw, "adamw"),
        }
    }
}

/// The buffers every training dispatch binds (Signature::Train), `states` being one layer's.
/// AdamW binds its first and second moments in the `ints` and `states` slots.
pub(crate) struct TrainBuffers<'a> {
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub act: &'a wgpu::Buffer,
    pub ints: &'a wgpu::Buffer,
    pub states: &'a wgpu::Buffer,
}

impl<'a> TrainBuffers<'a> {
    pub fn resources(self, uniform: wgpu::BindingResource<'a>) -> Vec<wgpu::BindingResource<'a>> {
        vec![
            uniform,
            self.params.as_entire_binding(),
            self.grads.as_entire_binding(),
            self.act.as_entire_binding(),
            self.ints.as_entire_binding(),
            self.states.as_entire_binding(),
        ]
    }
}
