//! The dispatch list of one training step: per micro-batch the forward (`forward`), the loss
//! and the backward (`backward`), then the gradient norm and AdamW (`optimizer`). Each
//! function mirrors its CPU counterpart in `model`, `layers::*` and `train::optim` line by
//! line, so the two can be read side by side.

use super::args::*;
use super::kernels::TrainKernels;
use super::layout::{ActLayout, LayerActs, ParamLayout};
use crate::config::Config;
use crate::gpu::args::{groups_for, groups_per_row};
use crate::gpu::dispatch::Recorder;
use crate::gpu::kernels::Kernel;
use crate::model::LossWeights;
use crate::params::{FfnParams, LayerParams, ParamKind, ParamTable, SwigluParams};

/// What a dispatch binds in the two slots after the activations: the ids and one layer's SSM
/// states (every kernel but AdamW), or AdamW's two moments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slots {
    States(usize),
    Moments,
}

/// The training step's dispatches, recorded with the model's layouts at hand.
pub(crate) struct TrainRecorder<'k> {
    kernels: &'k TrainKernels,
    pub rec: Recorder<'k, Slots>,
    c: &'k Config,
    table: &'k ParamTable,
    params: &'k ParamLayout,
    a: &'k ActLayout,
    /// What the next dispatches bind after the activations.
    slots: Slots,
}

/// How a micro-batch's loss terms are weighted: its share f of the batch and the loss weights.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MicroBatch {
    pub tokens_off: usize,
    pub share: f32,
    pub seqs: usize,
    pub loss: LossWeights,
    pub distill: bool,
}

impl<'k> TrainRecorder<'k> {
    pub fn new(
        kernels: &'k TrainKernels,
        c: &'k Config,
        table: &'k ParamTable,
        params: &'k ParamLayout,
        a: &'k ActLayout,
    ) -> TrainRecorder<'k> {
        TrainRecorder {
            kernels,
            rec: Recorder::new(),
            c,
            table,
            params,
            a,
            slots: Slots::States(0),
        }
    }

    fn push<A: bytemuck::Pod>(&mut self, kernel: &'k Kernel, args: A, groups: (u32, u32)) {
        self.rec.push(kernel, args, self.slots, groups);
    }

    /// Dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.rec.specs.len()
    }

    fn p(&self, slot: usize) -> usize {
        self.params.offsets[slot]
    }

    fn gemm(&mut self, mnk: (usize, usize, usize), a: Operand, b: Operand, c: (Buf, usize, usize), write: Write) {
        let groups = ((mnk.1 as u32).div_ceil(16).max(1), (mnk.0 as u32).div_ceil(16).max(1));
        self.push(&self.kernels.gemm, GemmArgs::new(mnk, a, b, c, write), groups);
    }

    /// y (M, out) = x (M, in) · Wᵀ for the table matrix `w` (out, in); x and y as (offset,
    /// row stride) in the activations.
    fn linear(&mut self, x: (usize, usize), w: usize, y: (usize, usize), write: Write) {
        let (out, inp) = self.shape(w);
        let wt = Operand {
            buf: Buf::Params,
            off: self.p(w),
            rs: 1,
            cs: inp,
        };
        self.gemm(
            (self.a.rows, out, inp),
            Operand::act(x.0, x.1),
            wt,
            (Buf::Act, y.0, y.1),
            write,
        );
    }

    /// dx (M, in) (+)= dy (M, out) · W, and dW += dyᵀ · x (`linear_backward`).
    fn linear_back(&mut self, dy: (usize, usize), w: usize, x: (usize, usize), dx: Option<((usize, usize), Write)>) {
        let (out, inp) = self.shape(w);
        let m = self.a.rows;
        if let Some((dx, write)) = dx {
            let wm = Operand {
                buf: Buf::Params,
                off: self.p(w),
                rs: inp,
                cs: 1,
            };
            self.gemm(
                (m, inp, out),
                Operand::act(dy.0, dy.1),
                wm,
                (Buf::Act, dx.0, dx.1),
                write,
            );
        }
        self.gemm(
            (out, inp, m),
            Operand::act(dy.0, dy.1).t(),
            Operand::act(x.0, x.1),
            (Buf::Grads, self.p(w), inp),
            Write::Add,
        );
    }

    fn shape(&self, w: usize) -> (usize, usize) {
        let s = &self.table.specs[w].shape;
        (s[0], s[1])
    }

    fn pointwise(&mut self, op: Op, cols: usize, operands: &[(usize, usize)], bias: usize) {
        let rows = self.a.rows;
        let args = PointwiseArgs {
            bias_off: bias as u32,
            ..PointwiseArgs::new(op, (rows, cols), operands)
        };
        self.push(&self.kernels.pointwise, args, groups_2d(rows * cols, 64));
    }

    fn norm(&mut self, x: usize, y: usize, rstd: usize, w: usize) {
        let args = NormArgs {
            rows: self.a.rows as u32,
            d: self.c.d_model as u32,
            x_off: x as u32,
            y_off: y as u32,
            rstd_off: rstd as u32,
            w_off: self.p(w) as u32,
            ..Default::default()
        };
        self.push(&self.kernels.rmsnorm_forward, args, groups_per_row(self.a.rows));
    }

    /// dx (+)= the norm's input gradient for dy; the weight's gradient into its slot.
    fn norm_back(&mut self, dy: usize, x: usize, rstd: usize, w: usize, dx: usize, accumulate: bool) {
        let d = self.c.d_model;
        let args = NormArgs {
            rows: self.a.rows as u32,
            d: d as u32,
            x_off: x as u32,
            rstd_off: rstd as u32,
            w_off: self.p(w) as u32,
            dy_off: dy as u32,
            dx_off: dx as u32,
            gw_off: self.p(w) as u32,
            accumulate: accumulate as u32,
            ..Default::default()
        };
        self.push(&self.kernels.rmsnorm_backward, args, groups_per_row(self.a.rows));
        self.push(&self.kernels.rmsnorm_weight_grad, args, groups_for(d));
    }

    fn ssm_args(&self, la: &LayerActs, p: &LayerParams, seqs: usize) -> SsmArgs {
        let (c, s) = (self.c, &self.a.scratch);
        let g = |slot: usize| self.p(slot) as u32;
        SsmArgs {
            batch: seqs as u32,
            t: self.a.t as u32,
            di: c.d_inner() as u32,
            n: c.d_state as u32,
            k: c.d_conv as u32,
            xz_off: la.xz as u32,
            conv_off: la.conv as u32,
            u_off: la.u as u32,
            dt_off: la.dt as u32,
            bc_off: la.bc as u32,
            xo: c.x_proj_out() as u32,
            b_col: c.dt_rank as u32,
            y_off: la.y as u32,
            conv_w: g(p.conv_w),
            conv_b: g(p.conv_b),
            a_log: g(p.a_log),
            d_skip: g(p.d_skip),
            dxz_off: s.dxz as u32,
            du_off: s.du as u32,
            ddt_off: s.ddt as u32,
            dy_off: s.dy as u32,
            dbc_off: s.dbc as u32,
            g_conv_w: g(p.conv_w),
            g_conv_b: g(p.conv_b),
            g_a_log: g(p.a_log),
            g_d_skip: g(p.d_skip),
            mode: 0,
        }
    }

    fn route_args(&self, la: &LayerActs) -> RouteArgs {
        let (c, s) = (self.c, &self.a.scratch);
        RouteArgs {
            rows: self.a.rows as u32,
            e: c.n_experts as u32,
            k: c.top_k as u32,
            probs_off: la.probs as u32,
            w_off: la.route_w as u32,
            experts_off: la.experts as u32,
            counts_off: la.counts as u32,
            report_off: (self.a.report + report::AUX) as u32,
            dw_off: s.dw as u32,
            dlogits_off: s.dlogits_r as u32,
            d: c.d_model as u32,
            ..Default::default()
        }
    }

    /// `model::forward` for one micro-batch: the logits (M, V) at `a.logits`.
    pub fn forward(&mut self, mb: MicroBatch) {
        let (c, a) = (self.c, self.a);
        let (m, d, di, f, e) = (a.rows, c.d_model, c.d_inner(), c.d_ff, c.n_experts);
        let xo = c.x_proj_out();
        let table = self.table;
        self.slots = Slots::States(0);
        let embed = EmbedArgs {
            rows: m as u32,
            d: d as u32,
            tokens_off: mb.tokens_off as u32,
            table_off: self.p(table.embed) as u32,
            x_off: a.layers[0].x as u32,
            g_off: self.p(table.embed) as u32,
        };
        self.push(&self.kernels.embed_forward, embed, groups_2d(m * d, 64));
        for (l, (p, la)) in table.layers.iter().zip(&a.layers).enumerate() {
            self.slots = Slots::States(l);
            // SSM block (layers::ssm::ssm_forward)
            self.norm(la.x, la.xn, la.rstd, p.ssm_norm);
            self.linear((la.xn, d), p.in_proj, (la.xz, 2 * di), Write::Set);
            let ssm = self.ssm_args(la, p, mb.seqs);
            self.push(&self.kernels.conv_forward, ssm, groups_for(m * di));
            self.linear((la.u, di), p.x_proj, (la.bc, xo), Write::Set);
            self.linear((la.bc, xo), p.dt_proj, (la.dt_pre, di), Write::Set);
            self.pointwise(Op::Dt, di, &[(la.dt_pre, di), (la.dt, di)], self.p(p.dt_b));
            self.push(&self.kernels.scan_forward, ssm, groups_for(mb.seqs * di));
            self.pointwise(Op::Gate, di, &[(la.y, di), (la.xz + di, 2 * di), (la.g, di)], 0);
            self.linear((la.g, di), p.out_proj, (la.x_ffn, d), Write::Residual(la.x, d));
            // FFN block
            self.norm(la.x_ffn, la.xn_ffn, la.rstd_ffn, p.ffn_norm);
            let next = a.layers.get(l + 1).map_or(a.x_final, |n| n.x);
            match &p.ffn {
                FfnParams::Dense(sp) => {
                    self.swiglu(la, 0, sp);
                    self.linear((la.ffn_h[0], f), sp.w2, (next, d), Write::Residual(la.x_ffn, d));
                }
                FfnParams::Moe { router, experts } => {
                    self.linear((la.xn_ffn, d), *router, (la.probs, e), Write::Set);
                    let route = RouteArgs {
                        aux_weight: mb.share / c.n_moe_layers() as f32,
                        ..self.route_args(la)
                    };
                    self.push(&self.kernels.route_forward, route, groups_for(m));
                    self.push(&self.kernels.aux_forward, route, (1, 1));
                    self.pointwise(Op::Copy, d, &[(la.x_ffn, d), (0, 0), (next, d)], 0);
                    for (ei, sp) in experts.iter().enumerate() {
                        self.swiglu(la, ei, sp);
                        self.linear((la.ffn_h[ei], f), sp.w2, (la.expert_out[ei], d), Write::Set);
                        let w = (la.route_w + ei, e);
                        self.pointwise(Op::RowAxpy, d, &[(la.expert_out[ei], d), w, (next, d)], 0);
                    }
                }
            }
        }
        self.slots = Slots::States(0);
        self.norm(a.x_final, a.xf, a.rstd_f, table.final_norm);
        self.linear((a.xf, d), table.embed, (a.logits, c.vocab_size), Write::Set);
    }

    /// The loss terms (`model::loss`): per-row CE (and KL to the teacher logits), the logits
    /// replaced by their gradient, the micro-batch's means added to the report.
    pub fn loss(&mut self, mb: MicroBatch) {
        let (c, a) = (self.c, self.a);
        let m = a.rows;
        let (lw, share) = (mb.loss, mb.share);
        let beta = if mb.distill { lw.distill_beta } else { 0.0 };
        let count = (mb.seqs * (a.t - 1)) as f32;
        let loss = LossArgs {
            rows: m as u32,
            t: a.t as u32,
            v: c.vocab_size as u32,
            logits_off: a.logits as u32,
            teacher_off: a.teacher.unwrap_or(0) as u32,
            tokens_off: mb.tokens_off as u32,
            rowloss_off: a.rowloss as u32,
            distill: mb.distill as u32,
            ce_scale: (1.0 - beta) * share / count,
            kl_scale: beta * lw.temperature * share / count,
            tau: lw.temperature,
            report_off: (a.report + report::CE) as u32,
            ce_weight: share,
            kl_weight: share * lw.temperature * lw.temperature,
        };
        self.push(&self.kernels.softmax_loss, loss, groups_per_row(m));
        self.push(&self.kernels.loss_total, loss, (1, 1));
    }

    /// W1x, W3x and h = silu(W1x) ⊙ W3x of FFN `i` of a layer (dense: i = 0).
    fn swiglu(&mut self, la: &LayerActs, i: usize, sp: &SwigluParams) {
        let (d, f) = (self.c.d_model, self.c.d_ff);
        self.linear((la.xn_ffn, d), sp.w1, (la.ffn_a[i], f), Write::Set);
        self.linear((la.xn_ffn, d), sp.w3, (la.ffn_b[i], f), Write::Set);
        self.pointwise(
            Op::Swiglu,
            f,
            &[(la.ffn_a[i], f), (la.ffn_b[i], f), (la.ffn_h[i], f)],
            0,
        );
    }

    /// `model::backward` for one micro-batch (its forward and loss recorded just before).
    pub fn backward(&mut self, mb: MicroBatch) {
        let (c, a) = (self.c, self.a);
        let (m, d, di, e) = (a.rows, c.d_model, c.d_inner(), c.n_experts);
        let (xo, r) = (c.x_proj_out(), c.dt_rank);
        let s = a.scratch.clone();
        let table = self.table;
        self.slots = Slots::States(0);
        // logits = xf · embedᵀ (tied head)
        let v = c.vocab_size;
        self.linear_back((a.logits, v), table.embed, (a.xf, d), Some(((s.dnorm, d), Write::Set)));
        self.norm_back(s.dnorm, a.x_final, a.rstd_f, table.final_norm, s.dx, false);

        for (l, (p, la)) in table.layers.iter().zip(&a.layers).enumerate().rev() {
            self.slots = Slots::States(l);
            // x ← x + FFN(rmsnorm(x)): dout = dx; the branch's input gradient goes to dnorm.
            match &p.ffn {
                FfnParams::Dense(sp) => self.swiglu_back(la, 0, sp, (s.dx, d), Write::Set),
                FfnParams::Moe { router, experts } => {
                    let route = self.route_args(la);
                    for (ei, sp) in experts.iter().enumerate() {
                        let dot = RouteArgs {
                            expert: ei as u32,
                            dout_off: s.dx as u32,
                            out_off: la.expert_out[ei] as u32,
                            ..route
                        };
                        self.push(&self.kernels.route_dot, dot, groups_for(m));
                        let w = (la.route_w + ei, e);
                        self.pointwise(Op::RowScale, d, &[(s.dx, d), w, (s.dexp, d)], 0);
                        let write = if ei == 0 { Write::Set } else { Write::Add };
                        self.swiglu_back(la, ei, sp, (s.dexp, d), write);
                    }
                    let back = RouteArgs {
                        aux_scale: mb.loss.aux_alpha / c.n_moe_layers() as f32 * mb.share,
                        ..route
                    };
                    self.push(&self.kernels.route_backward, back, groups_for(m));
                    self.linear_back(
                        (s.dlogits_r, e),
                        *router,
                        (la.xn_ffn, d),
                        Some(((s.dnorm, d), Write::Add)),
                    );
                }
            }
            self.norm_back(s.dnorm, la.x_ffn, la.rstd_ffn, p.ffn_norm, s.dx, true);

            // x ← x + SSM(rmsnorm(x)) (layers::ssm::ssm_backward)
            self.linear_back((s.dx, d), p.out_proj, (la.g, di), Some(((s.dg, di), Write::Set)));
            let ops = [
                (la.y, di),
                (la.xz + di, 2 * di),
                (s.dg, di),
                (s.dy, di),
                (s.dxz + di, 2 * di),
            ];
            self.pointwise(Op::GateBack, di, &ops, 0);
            let ssm = self.ssm_args(la, p, mb.seqs);
            let rows_states = groups_for(m * c.d_state);
            self.push(&self.kernels.state_reduce, ssm, rows_states);
            self.push(&self.kernels.scan_backward, ssm, groups_for(di));
            self.push(&self.kernels.state_reduce, SsmArgs { mode: 1, ..ssm }, rows_states);
            self.pointwise(Op::DtBack, di, &[(s.ddt, di), (la.dt_pre, di)], 0);
            let colsum = PointwiseArgs {
                g_off: self.p(p.dt_b) as u32,
                ..PointwiseArgs::new(Op::Copy, (m, di), &[(s.ddt, di)])
            };
            self.push(&self.kernels.colsum, colsum, groups_for(di));
            self.linear_back((s.ddt, di), p.dt_proj, (la.bc, xo), Some(((s.dbc, xo), Write::Set)));
            debug_assert_eq!(self.shape(p.dt_proj).1, r);
            self.linear_back((s.dbc, xo), p.x_proj, (la.u, di), Some(((s.du, di), Write::Add)));
            self.push(&self.kernels.conv_backward_weight, ssm, groups_for(di * (c.d_conv + 1)));
            self.push(&self.kernels.conv_backward_input, ssm, groups_for(m * di));
            self.linear_back((s.dxz, 2 * di), p.in_proj, (la.xn, d), Some(((s.dnorm, d), Write::Set)));
            self.norm_back(s.dnorm, la.x, la.rstd, p.ssm_norm, s.dx, true);
        }
        self.slots = Slots::States(0);
        let embed = EmbedArgs {
            rows: m as u32,
            d: d as u32,
            tokens_off: mb.tokens_off as u32,
            table_off: self.p(table.embed) as u32,
            x_off: s.dx as u32,
            g_off: self.p(table.embed) as u32,
        };
        self.push(&self.kernels.embed_backward, embed, groups_for(d));
    }

    /// `swiglu_backward` of FFN `i` for `dout`; its input gradient (+)= into dnorm.
    fn swiglu_back(&mut self, la: &LayerActs, i: usize, sp: &SwigluParams, dout: (usize, usize), write: Write) {
        let (d, f) = (self.c.d_model, self.c.d_ff);
        let s = self.a.scratch.clone();
        self.linear_back(dout, sp.w2, (la.ffn_h[i], f), Some(((s.dh, f), Write::Set)));
        let ops = [(la.ffn_a[i], f), (la.ffn_b[i], f), (s.dh, f), (s.da, f), (s.db, f)];
        self.pointwise(Op::SwigluBack, f, &ops, 0);
        self.linear_back((s.da, f), sp.w1, (la.xn_ffn, d), Some(((s.dnorm, d), write)));
        self.linear_back((s.db, f), sp.w3, (la.xn_ffn, d), Some(((s.dnorm, d), Write::Add)));
    }

    /// The global gradient norm, then AdamW on every tensor (`AdamW::update` after the clip).
    pub fn optimizer(&mut self, adam: AdamArgs) {
        self.slots = Slots::Moments;
        let total = self.params.len;
        let base = AdamArgs {
            len: total as u32,
            report_off: self.a.report as u32,
            partial_off: self.a.partials as u32,
            ..adam
        };
        self.push(&self.kernels.sum_squares, base, (report::PARTS as u32, 1));
        self.push(&self.kernels.sum_squares_total, base, (1, 1));
        for (slot, spec) in self.table.specs.iter().enumerate() {
            let args = AdamArgs {
                len: spec.numel() as u32,
                off: self.p(slot) as u32,
                decay: if spec.kind == ParamKind::Matrix {
                    adam.decay
                } else {
                    0.0
                },
                ..base
            };
            self.push(&self.kernels.adamw, args, groups_2d(spec.numel(), 256));
        }
    }
}
