//! A recorded dispatch — pipeline, bind group (made once, at load) and workgroup counts — and
//! the replay of a list of them in one compute pass: how both the decode model and the
//! training step run.

pub(crate) struct Dispatch {
    /// The kernel's name, for profiles.
    pub label: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub groups: (u32, u32),
}

/// `dispatches` `times` over, in one compute pass of `encoder`.
pub(crate) fn run_pass(encoder: &mut wgpu::CommandEncoder, dispatches: &[Dispatch], times: usize) {
    let mut pass = encoder.begin_compute_pass(&Default::default());
    for _ in 0..times {
        for d in dispatches {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups.0, d.groups.1, 1);
        }
    }
}
