//! Every training kernel (shaders/train/) against its CPU twin on odd shapes, tolerance
//! atol + |ref|·rtol (lavapipe in CI; prints SKIPPED without an adapter unless
//! ITERA_REQUIRE_GPU is set). Each test lays its data out in the five training buffers with
//! offsets that are not zero, so that the offsets are honoured.
#![cfg(feature = "gpu")]

mod gpu_common;

use gpu_common::{assert_close, gpu, random};
use itera_core::gpu::args::groups_for;
use itera_core::gpu::kernels::Kernel;
use itera_core::gpu::oneshot::{run_train_blocking, TrainData};
use itera_core::gpu::train::args::*;
use itera_core::gpu::Gpu;
use itera_core::layers::activations::{sigmoid, silu, silu_grad, softmax, softplus};
use itera_core::layers::conv::{conv_backward, conv_forward, ConvDims};
use itera_core::layers::loss::{cross_entropy, distill_kl};
use itera_core::layers::moe::{aux_loss, route, router_backward};
use itera_core::layers::norm::{rmsnorm_backward, rmsnorm_forward};
use itera_core::layers::scan::{scan_backward, scan_forward, ScanDims};
use itera_core::model::BatchDims;
use itera_core::rng::Pcg32;
use itera_core::train::AdamW;
use itera_core::{Config, Grads, Weights};

fn run<A: bytemuck::Pod>(g: &Gpu, kernel: &Kernel, args: A, data: &TrainData, groups: (u32, u32)) -> TrainData {
    run_train_blocking(g, kernel, args, data, groups).unwrap()
}

/// A buffer of `len` random values with `pad` leading junk values.
fn padded(rng: &mut Pcg32, pad: usize, len: usize) -> Vec<f32> {
    let mut v = vec![7.0; pad];
    v.extend(random(rng, len));
    v
}

#[test]
fn gemm_matches_the_cpu_for_every_operand_layout_and_write_mode() {
    let Some(g) = gpu() else { return };
    let k = &g.train_kernels().gemm;
    let mut rng = Pcg32::new(1);
    for (m, n, kk) in [(1, 1, 1), (3, 17, 5), (33, 19, 70), (65, 130, 17)] {
        // A (m × k) stored transposed in the activations, B (k × n) in the parameters,
        // C (m × n) with a wider row stride in the gradients, R in the activations.
        let (a_off, r_off, b_off, c_off, c_rs) = (3, 3 + m * kk + 2, 5, 1, n + 3);
        let mut act = padded(&mut rng, a_off, m * kk);
        act.extend([0.0, 0.0]);
        act.extend(random(&mut rng, m * n));
        let params = padded(&mut rng, b_off, kk * n);
        let grads = padded(&mut rng, c_off, m * c_rs);
        let data = TrainData {
            params,
            grads,
            act,
            ints: vec![0],
            states: vec![0.0],
        };
        let a = Operand::act(a_off, 1).t(); // element (i, k) at a_off + k·m + i
        let a = Operand { rs: 1, cs: m, ..a };
        let b = Operand {
            buf: Buf::Params,
            off: b_off,
            rs: n,
            cs: 1,
        };
        for write in [Write::Set, Write::Add, Write::Residual(r_off, n)] {
            let args = GemmArgs::new((m, n, kk), a, b, (Buf::Grads, c_off, c_rs), write);
            let groups = ((n as u32).div_ceil(16), (m as u32).div_ceil(16));
            let out = run(&g, k, args, &data, groups);
            // CPU twin: kernels::gemm with the same strides.
            let mut want = data.grads[c_off..].to_vec();
            let beta = if write == Write::Add { 1.0 } else { 0.0 };
            let (a_in, b_in) = (&data.act[a_off..], &data.params[b_off..]);
            itera_core::kernels::gemm(m, kk, n, 1.0, a_in, (1, m), b_in, (n, 1), beta, &mut want, (c_rs, 1));
            if let Write::Residual(r, rs) = write {
                for i in 0..m {
                    for j in 0..n {
                        want[i * c_rs + j] += data.act[r + i * rs + j];
                    }
                }
            }
            for i in 0..m {
                let row = |v: &[f32]| v[i * c_rs..i * c_rs + n].to_vec();
                let what = format!("gemm {m}×{n}×{kk} {write:?} row {i}");
                assert_close(&row(&out.grads[c_off..]), &row(&want), 1e-5, 1e-5, &what);
            }
        }
    }
}

#[test]
fn rmsnorm_forward_backward_and_weight_gradient_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let tk = g.train_kernels();
    let mut rng = Pcg32::new(2);
    for (rows, d) in [(1, 1), (5, 77), (3, 130)] {
        let (x, y, rstd, dy, dx) = (2, 2 + rows * d, 2 + 2 * rows * d, 2 + 2 * rows * d + rows, 0);
        let dx_off = dy + rows * d;
        let _ = dx;
        let mut act = padded(&mut rng, x, rows * d);
        act.extend(vec![0.0; rows * d + rows]);
        act.extend(random(&mut rng, rows * d)); // dy
        act.extend(random(&mut rng, rows * d)); // dx (accumulated into)
        let params = padded(&mut rng, 1, d);
        let grads = padded(&mut rng, 4, d);
        let args = NormArgs {
            rows: rows as u32,
            d: d as u32,
            x_off: x as u32,
            y_off: y as u32,
            rstd_off: rstd as u32,
            w_off: 1,
            dy_off: dy as u32,
            dx_off: dx_off as u32,
            gw_off: 4,
            accumulate: 1,
        };
        let data = TrainData {
            params,
            grads,
            act,
            ints: vec![0],
            states: vec![0.0],
        };
        let fwd = run(&g, &tk.rmsnorm_forward, args, &data, (rows as u32, 1));
        let (mut want_y, mut want_r) = (vec![0.0; rows * d], vec![0.0; rows]);
        let xs = &data.act[x..x + rows * d];
        rmsnorm_forward(&mut want_y, &mut want_r, xs, &data.params[1..], d);
        assert_close(&fwd.act[y..y + rows * d], &want_y, 1e-5, 1e-5, "rmsnorm y");
        assert_close(&fwd.act[rstd..rstd + rows], &want_r, 1e-5, 1e-5, "rmsnorm rstd");

        let back = run(&g, &tk.rmsnorm_backward, args, &fwd, (rows as u32, 1));
        let back = run(&g, &tk.rmsnorm_weight_grad, args, &back, groups_for(d));
        let mut want_dx = data.act[dx_off..dx_off + rows * d].to_vec();
        let mut want_gw = data.grads[4..].to_vec();
        let dys = &data.act[dy..dy + rows * d];
        rmsnorm_backward(&mut want_dx, &mut want_gw, dys, xs, &data.params[1..], &want_r, d);
        assert_close(&back.act[dx_off..dx_off + rows * d], &want_dx, 1e-5, 1e-4, "rmsnorm dx");
        assert_close(&back.grads[4..], &want_gw, 1e-5, 1e-4, "rmsnorm dw");
        // accumulate = 0 overwrites dx.
        let set = run(
            &g,
            &tk.rmsnorm_backward,
            NormArgs { accumulate: 0, ..args },
            &fwd,
            (rows as u32, 1),
        );
        let mut fresh = vec![0.0; rows * d];
        rmsnorm_backward(&mut fresh, &mut vec![0.0; d], dys, xs, &data.params[1..], &want_r, d);
        assert_close(
            &set.act[dx_off..dx_off + rows * d],
            &fresh,
            1e-5,
            1e-4,
            "rmsnorm dx (set)",
        );
    }
}

/// An SSM layout for the conv and scan tests: batch × t rows, Di channels, N states, R = 3.
struct SsmCase {
    args: SsmArgs,
    data: TrainData,
}

fn ssm_case(rng: &mut Pcg32, batch: usize, t: usize, di: usize, n: usize, k: usize) -> SsmCase {
    let (m, r) = (batch * t, 3);
    let xo = r + 2 * n;
    let mut next = 1;
    let mut take = |len: usize| {
        let at = next;
        next += len;
        at
    };
    let (xz, conv, u, dt, bc, y) = (
        take(m * 2 * di),
        take(m * di),
        take(m * di),
        take(m * di),
        take(m * xo),
        take(m * di),
    );
    let (dxz, du, ddt, dy, dbc) = (take(m * 2 * di), take(m * di), take(m * di), take(m * di), take(m * xo));
    let mut act = random(rng, next);
    // dt > 0 as after the softplus.
    for v in &mut act[dt..dt + m * di] {
        *v = softplus(*v);
    }
    let mut pnext = 2;
    let mut ptake = |len: usize| {
        let at = pnext;
        pnext += len;
        at
    };
    let (conv_w, conv_b, a_log, d_skip) = (ptake(di * k), ptake(di), ptake(di * n), ptake(di));
    let params = random(rng, pnext);
    let grads = random(rng, pnext);
    let args = SsmArgs {
        batch: batch as u32,
        t: t as u32,
        di: di as u32,
        n: n as u32,
        k: k as u32,
        xz_off: xz as u32,
        conv_off: conv as u32,
        u_off: u as u32,
        dt_off: dt as u32,
        bc_off: bc as u32,
        xo: xo as u32,
        b_col: r as u32,
        y_off: y as u32,
        conv_w: conv_w as u32,
        conv_b: conv_b as u32,
        a_log: a_log as u32,
        d_skip: d_skip as u32,
        dxz_off: dxz as u32,
        du_off: du as u32,
        ddt_off: ddt as u32,
        dy_off: dy as u32,
        dbc_off: dbc as u32,
        g_conv_w: conv_w as u32,
        g_conv_b: conv_b as u32,
        g_a_log: a_log as u32,
        g_d_skip: d_skip as u32,
        mode: 0,
    };
    SsmCase {
        args,
        data: TrainData {
            params,
            grads,
            act,
            ints: vec![0],
            states: vec![0.0; m * di * n],
        },
    }
}

fn at(v: &[f32], off: u32, len: usize) -> &[f32] {
    &v[off as usize..off as usize + len]
}

#[test]
fn conv_forward_and_backward_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let tk = g.train_kernels();
    let mut rng = Pcg32::new(3);
    for (batch, t, di, k) in [(1, 1, 1, 4), (3, 7, 13, 4), (2, 5, 70, 3)] {
        let SsmCase { args: a, data } = ssm_case(&mut rng, batch, t, di, 11, k);
        let m = batch * t;
        let fwd = run(&g, &tk.conv_forward, a, &data, groups_for(m * di));
        let dims = ConvDims {
            batch,
            t,
            c: di,
            width: k,
            x_stride: 2 * di,
        };
        let (w, b) = (at(&data.params, a.conv_w, di * k), at(&data.params, a.conv_b, di));
        let mut conv = vec![0.0; m * di];
        conv_forward(&mut conv, &data.act[a.xz_off as usize..], w, b, None, dims);
        let u: Vec<f32> = conv.iter().map(|&v| silu(v)).collect();
        assert_close(at(&fwd.act, a.conv_off, m * di), &conv, 1e-5, 1e-5, "conv");
        assert_close(at(&fwd.act, a.u_off, m * di), &u, 1e-5, 1e-5, "silu(conv)");

        let back = run(&g, &tk.conv_backward_input, a, &fwd, groups_for(m * di));
        let back = run(&g, &tk.conv_backward_weight, a, &back, groups_for(di * (k + 1)));
        let dconv: Vec<f32> = at(&fwd.act, a.du_off, m * di)
            .iter()
            .zip(&conv)
            .map(|(d, c)| d * silu_grad(*c))
            .collect();
        let mut dx = vec![0.0; m * 2 * di];
        let (mut gw, mut gb) = (
            at(&data.grads, a.conv_w, di * k).to_vec(),
            at(&data.grads, a.conv_b, di).to_vec(),
        );
        conv_backward(
            &mut dx,
            &mut gw,
            &mut gb,
            &dconv,
            &data.act[a.xz_off as usize..],
            w,
            dims,
        );
        for row in 0..m {
            let got = at(&back.act, a.dxz_off + (row * 2 * di) as u32, di);
            assert_close(got, &dx[row * 2 * di..row * 2 * di + di], 1e-5, 1e-4, "conv dx");
        }
        assert_close(at(&back.grads, a.conv_w, di * k), &gw, 1e-4, 1e-4, "conv dw");
        assert_close(at(&back.grads, a.conv_b, di), &gb, 1e-4, 1e-4, "conv db");
    }
}

#[test]
fn scan_forward_reverse_scan_and_state_sums_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let tk = g.train_kernels();
    let mut rng = Pcg32::new(4);
    for (batch, t, di, n) in [(1, 1, 1, 1), (2, 9, 13, 11), (3, 17, 65, 16)] {
        let SsmCase { args: a, data } = ssm_case(&mut rng, batch, t, di, n, 4);
        let m = batch * t;
        let xo = a.xo as usize;
        let fwd = run(&g, &tk.scan_forward, a, &data, groups_for(batch * di));
        let dims = ScanDims {
            batch,
            t,
            di,
            n,
            bc_stride: xo,
            b_off: 3,
            c_off: 3 + n,
        };
        let a_mat: Vec<f32> = at(&data.params, a.a_log, di * n).iter().map(|v| -v.exp()).collect();
        let d_skip = at(&data.params, a.d_skip, di);
        let (u, dt, bc) = (
            at(&data.act, a.u_off, m * di),
            at(&data.act, a.dt_off, m * di),
            &data.act[a.bc_off as usize..],
        );
        let (mut y, mut h_all, mut h_last) = (vec![0.0; m * di], vec![0.0; m * di * n], vec![0.0; batch * di * n]);
        scan_forward(&mut y, Some(&mut h_all), &mut h_last, u, dt, &a_mat, bc, d_skip, dims);
        assert_close(at(&fwd.act, a.y_off, m * di), &y, 1e-5, 1e-4, "scan y");
        assert_close(&fwd.states, &h_all, 1e-5, 1e-4, "scan states");

        let back = run(&g, &tk.state_reduce, a, &fwd, groups_for(m * n));
        let back = run(&g, &tk.scan_backward, a, &back, groups_for(di));
        let back = run(&g, &tk.state_reduce, SsmArgs { mode: 1, ..a }, &back, groups_for(m * n));
        let (mut du, mut ddt, mut da) = (vec![0.0; m * di], vec![0.0; m * di], vec![0.0; di * n]);
        let mut dbc = vec![0.0; m * xo];
        let mut dd = at(&data.grads, a.d_skip, di).to_vec();
        let dy = at(&data.act, a.dy_off, m * di);
        scan_backward(
            &mut du,
            &mut ddt,
            &mut da,
            &mut dbc,
            &mut dd,
            dy,
            u,
            dt,
            &a_mat,
            bc,
            d_skip,
            &h_all,
            dims,
            &mut Default::default(),
        );
        assert_close(at(&back.act, a.du_off, m * di), &du, 1e-4, 1e-3, "scan du");
        assert_close(at(&back.act, a.ddt_off, m * di), &ddt, 1e-4, 1e-3, "scan ddt");
        let ga: Vec<f32> = at(&data.grads, a.a_log, di * n)
            .iter()
            .zip(da.iter().zip(&a_mat))
            .map(|(g0, (d, am))| g0 + d * am)
            .collect();
        assert_close(at(&back.grads, a.a_log, di * n), &ga, 1e-4, 1e-3, "scan dA_log");
        assert_close(at(&back.grads, a.d_skip, di), &dd, 1e-4, 1e-3, "scan dDskip");
        for row in 0..m {
            let cols = |v: &[f32]| v[row * xo + 3..row * xo + xo].to_vec();
            assert_close(
                &cols(&back.act[a.dbc_off as usize..]),
                &cols(&dbc),
                1e-4,
                1e-3,
                "scan dB, dC",
            );
        }
    }
}

#[test]
fn pointwise_ops_and_column_sums_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let tk = g.train_kernels();
    let mut rng = Pcg32::new(5);
    let (rows, cols) = (7, 37);
    let len = rows * cols;
    // Five operands of `len` after an offset of 3, then a per-row column (rows, stride 2).
    let off = |i: usize| 3 + i * len;
    let per_row = 3 + 5 * len;
    let act = padded(&mut rng, 3, 5 * len + 2 * rows);
    let params = padded(&mut rng, 2, cols);
    let data = TrainData {
        params,
        grads: vec![0.5; cols + 1],
        act,
        ints: vec![0],
        states: vec![0.0],
    };
    let x = |i: usize, e: usize| data.act[off(i) + e];
    let ops: [(Op, &[(usize, usize)]); 9] = [
        (Op::Dt, &[(off(0), cols), (off(1), cols)]),
        (Op::Gate, &[(off(0), cols), (off(1), cols), (off(2), cols)]),
        (
            Op::GateBack,
            &[
                (off(0), cols),
                (off(1), cols),
                (off(2), cols),
                (off(3), cols),
                (off(4), cols),
            ],
        ),
        (Op::DtBack, &[(off(0), cols), (off(1), cols)]),
        (Op::Swiglu, &[(off(0), cols), (off(1), cols), (off(2), cols)]),
        (
            Op::SwigluBack,
            &[
                (off(0), cols),
                (off(1), cols),
                (off(2), cols),
                (off(3), cols),
                (off(4), cols),
            ],
        ),
        (Op::RowAxpy, &[(off(0), cols), (per_row, 2), (off(2), cols)]),
        (Op::RowScale, &[(off(0), cols), (per_row, 2), (off(2), cols)]),
        (Op::Copy, &[(off(0), cols), (0, 0), (off(2), cols)]),
    ];
    for (op, operands) in ops {
        let args = PointwiseArgs {
            bias_off: 2,
            ..PointwiseArgs::new(op, (rows, cols), operands)
        };
        let out = run(&g, &tk.pointwise, args, &data, groups_2d(len, 64));
        let mut want = data.act.clone();
        for e in 0..len {
            let (row, col) = (e / cols, e % cols);
            let (a, b, c) = (x(0, e), x(1, e), x(2, e));
            let w = data.act[per_row + 2 * row];
            let mut set = |i: usize, v: f32| want[off(i) + e] = v;
            match op {
                Op::Dt => {
                    let pre = a + data.params[2 + col];
                    set(0, pre);
                    set(1, softplus(pre));
                }
                Op::Gate => set(2, a * silu(b)),
                Op::GateBack => {
                    set(3, c * silu(b));
                    set(4, c * a * silu_grad(b));
                }
                Op::DtBack => set(0, a * sigmoid(b)),
                Op::Swiglu => set(2, silu(a) * b),
                Op::SwigluBack => {
                    set(3, c * b * silu_grad(a));
                    set(4, c * silu(a));
                }
                Op::RowAxpy => set(2, c + w * a),
                Op::RowScale => set(2, w * a),
                Op::Copy => set(2, a),
            }
        }
        assert_close(&out.act, &want, 1e-6, 1e-5, &format!("{op:?}"));
    }
    let args = PointwiseArgs {
        g_off: 1,
        ..PointwiseArgs::new(Op::Copy, (rows, cols), &[(off(0), cols)])
    };
    let out = run(&g, &tk.colsum, args, &data, groups_for(cols));
    let want: Vec<f32> = (0..cols)
        .map(|j| 0.5 + (0..rows).map(|r| x(0, r * cols + j)).sum::<f32>())
        .collect();
    assert_close(&out.grads[1..], &want, 1e-5, 1e-5, "colsum");
}

#[test]
fn routing_forward_aux_loss_and_router_backward_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let tk = g.train_kernels();
    let mut rng = Pcg32::new(6);
    for (rows, e, k, d) in [(1, 1, 1, 3), (9, 5, 2, 7), (70, 4, 3, 33)] {
        let mut next = 2;
        let mut take = |len: usize| {
            let at = next;
            next += len;
            at
        };
        let (probs, w, counts, dw, dlogits, dout, out, report) = (
            take(rows * e),
            take(rows * e),
            take(e),
            take(rows * e),
            take(rows * e),
            take(rows * d),
            take(rows * d),
            take(1),
        );
        let mut act = random(&mut rng, next);
        act[report] = 0.25;
        // Ties: two equal logits in the first row.
        if e > 1 {
            act[probs + 1] = act[probs];
        }
        let args = RouteArgs {
            rows: rows as u32,
            e: e as u32,
            k: k as u32,
            probs_off: probs as u32,
            w_off: w as u32,
            experts_off: 1,
            counts_off: counts as u32,
            report_off: report as u32,
            aux_weight: 0.5,
            dw_off: dw as u32,
            dlogits_off: dlogits as u32,
            aux_scale: 0.3,
            d: d as u32,
            expert: 0,
            dout_off: dout as u32,
            out_off: out as u32,
        };
        let data = TrainData {
            params: vec![0.0],
            grads: vec![0.0],
            act,
            ints: vec![9; 1 + rows * k],
            states: vec![0.0],
        };
        let fwd = run(&g, &tk.route_forward, args, &data, groups_for(rows));
        let fwd = run(&g, &tk.aux_forward, args, &fwd, (1, 1));
        // CPU: softmax, route, aux_loss.
        let mut want_p = data.act[probs..probs + rows * e].to_vec();
        let (mut ex, mut wt) = (vec![0usize; rows * k], vec![0.0f32; rows * k]);
        let mut dense = vec![0.0f32; rows * e];
        for r in 0..rows {
            softmax(&mut want_p[r * e..(r + 1) * e]);
            route(
                &want_p[r * e..(r + 1) * e],
                &mut ex[r * k..(r + 1) * k],
                &mut wt[r * k..(r + 1) * k],
            );
            for j in 0..k {
                dense[r * e + ex[r * k + j]] = wt[r * k + j];
            }
        }
        let mut count = vec![0usize; e];
        ex.iter().for_each(|&x| count[x] += 1);
        assert_close(&fwd.act[probs..probs + rows * e], &want_p, 1e-6, 1e-5, "router probs");
        let got_ex: Vec<usize> = fwd.ints[1..].iter().map(|&x| x as usize).collect();
        assert_eq!(got_ex, ex, "chosen experts");
        assert_close(&fwd.act[w..w + rows * e], &dense, 1e-6, 1e-5, "routing weights");
        let aux = aux_loss(&want_p, &count, rows, e, k);
        assert_close(
            &fwd.act[report..report + 1],
            &[0.25 + 0.5 * aux],
            1e-6,
            1e-5,
            "aux loss",
        );

        // route_dot for each expert, then the router backward.
        let mut back = fwd.clone();
        for expert in 0..e {
            back = run(
                &g,
                &tk.route_dot,
                RouteArgs {
                    expert: expert as u32,
                    ..args
                },
                &back,
                groups_for(rows),
            );
        }
        let dots: Vec<f32> = (0..rows)
            .map(|r| {
                (0..d)
                    .map(|c| data.act[dout + r * d + c] * data.act[out + r * d + c])
                    .sum()
            })
            .collect();
        for r in 0..rows {
            for x in 0..e {
                assert_close(
                    &back.act[dw + r * e + x..dw + r * e + x + 1],
                    &dots[r..r + 1],
                    1e-5,
                    1e-5,
                    "route_dot",
                );
            }
        }
        let back = run(&g, &tk.route_backward, args, &back, groups_for(rows));
        let dws: Vec<f32> = (0..rows * k).map(|i| dots[i / k]).collect();
        let mut want = Vec::new();
        router_backward(&want_p, &ex, &wt, &dws, &count, 0.3, k, &mut want, &mut Vec::new());
        assert_close(
            &back.act[dlogits..dlogits + rows * e],
            &want,
            1e-5,
            1e-4,
            "router dlogits",
        );
    }
}

#[test]
fn softmax_loss_and_its_gradient_match_the_cpu_with_and_without_distillation() {
    let Some(g) = gpu() else { return };
    let tk = g.train_kernels();
    let mut rng = Pcg32::new(7);
    for (batch, t, v) in [(1, 2, 1), (2, 5, 37), (3, 4, 300), (1, 3, 4099)] {
        let rows = batch * t;
        let (logits, teacher, rowloss, report) = (3, 3 + rows * v, 3 + 2 * rows * v, 3 + 2 * rows * v + 2 * rows);
        let mut act = padded(&mut rng, 3, 2 * rows * v);
        act.iter_mut().for_each(|x| *x *= 4.0);
        act.extend(vec![0.0; 2 * rows]);
        act.extend([0.1, 0.2]);
        let tokens: Vec<u32> = (0..rows).map(|_| rng.below(v as u32)).collect();
        let mut ints = vec![5];
        ints.extend(&tokens);
        let bd = BatchDims { batch, t };
        for (distill, beta, tau) in [(false, 0.0, 1.0), (true, 0.7, 2.0)] {
            let count = (batch * (t - 1)) as f32;
            let args = LossArgs {
                rows: rows as u32,
                t: t as u32,
                v: v as u32,
                logits_off: logits as u32,
                teacher_off: teacher as u32,
                tokens_off: 1,
                rowloss_off: rowloss as u32,
                distill: distill as u32,
                ce_scale: (1.0 - beta) * 0.5 / count,
                kl_scale: beta * tau * 0.5 / count,
                tau,
                report_off: report as u32,
                ce_weight: 0.5,
                kl_weight: 0.5 * tau * tau,
            };
            let data = TrainData {
                params: vec![0.0],
                grads: vec![0.0],
                act: act.clone(),
                ints: ints.clone(),
                states: vec![0.0],
            };
            let out = run(&g, &tk.softmax_loss, args, &data, (rows as u32, 1));
            let out = run(&g, &tk.loss_total, args, &out, (1, 1));
            let (z, tz) = (&act[logits..logits + rows * v], &act[teacher..teacher + rows * v]);
            let mut dl = vec![0.0; rows * v];
            let ce = cross_entropy(z, &tokens, bd, v, Some(&mut dl), (1.0 - beta) * 0.5);
            let kl = if distill {
                distill_kl(z, tz, bd, v, tau, Some(&mut dl), beta * 0.5)
            } else {
                0.0
            };
            let what = format!("loss {batch}×{t}×{v} distill {distill}");
            assert_close(
                &out.act[logits..logits + rows * v],
                &dl,
                1e-7,
                1e-4,
                &format!("{what}: dlogits"),
            );
            assert_close(
                &out.act[report..report + 2],
                &[0.1 + 0.5 * ce, 0.2 + 0.5 * kl],
                1e-6,
                1e-5,
                &what,
            );
        }
    }
}

#[test]
fn embedding_gather_and_scatter_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let tk = g.train_kernels();
    let mut rng = Pcg32::new(8);
    let (rows, d, v) = (29, 13, 7); // tokens repeat: the scatter must add them all.
    let tokens: Vec<u32> = (0..rows).map(|_| rng.below(v as u32)).collect();
    let mut ints = vec![0, 0];
    ints.extend(&tokens);
    let data = TrainData {
        params: padded(&mut rng, 1, v * d),
        grads: padded(&mut rng, 2, v * d),
        act: padded(&mut rng, 4, 2 * rows * d),
        ints,
        states: vec![0.0],
    };
    let args = EmbedArgs {
        rows: rows as u32,
        d: d as u32,
        tokens_off: 2,
        table_off: 1,
        x_off: 4,
        g_off: 2,
    };
    let fwd = run(&g, &tk.embed_forward, args, &data, groups_2d(rows * d, 64));
    let want: Vec<f32> = tokens
        .iter()
        .flat_map(|&t| data.params[1 + t as usize * d..1 + (t as usize + 1) * d].to_vec())
        .collect();
    assert_close(&fwd.act[4..4 + rows * d], &want, 0.0, 0.0, "embedding gather");
    let back = run(
        &g,
        &tk.embed_backward,
        EmbedArgs {
            x_off: 4 + (rows * d) as u32,
            ..args
        },
        &data,
        groups_for(d),
    );
    let mut want = data.grads[2..].to_vec();
    for (r, &t) in tokens.iter().enumerate() {
        for c in 0..d {
            want[t as usize * d + c] += data.act[4 + rows * d + r * d + c];
        }
    }
    assert_close(&back.grads[2..], &want, 1e-6, 1e-6, "embedding scatter");
}

#[test]
fn gradient_norm_clipping_and_adamw_match_the_cpu_optimiser() {
    let Some(g) = gpu() else { return };
    let tk = g.train_kernels();
    let c = Config::preset("test").unwrap();
    let mut w = Weights::init_random(&c, 9).unwrap();
    let mut rng = Pcg32::new(9);
    let mut grads = Grads::zeros(&w.table);
    grads.tensors.iter_mut().for_each(|t| *t = random(&mut rng, t.len()));
    let total: usize = grads.tensors.iter().map(Vec::len).sum();
    let flat = |v: &[Vec<f32>]| v.iter().flatten().copied().collect::<Vec<f32>>();
    let params: Vec<f32> = w.tensors.iter().flat_map(|t| t.as_f32().unwrap().to_vec()).collect();
    // Moments from an earlier step, so that both terms of the update matter.
    let (m0, v0) = (
        random(&mut rng, total),
        random(&mut rng, total).iter().map(|x| x.abs()).collect::<Vec<_>>(),
    );
    let gbuf = flat(&grads.tensors);
    let (lr, step, clip) = (3e-3f32, 2i32, 1.5f32);
    let (b1, b2) = (0.9f32, 0.95f32);
    let mut act = vec![0.0; report::LEN + report::PARTS];
    act[report::LR] = lr;
    act[report::C1] = 1.0 - b1.powi(step);
    act[report::C2] = 1.0 - b2.powi(step);
    let base = AdamArgs {
        len: total as u32,
        report_off: 0,
        partial_off: report::LEN as u32,
        decay: 0.1,
        beta1: b1,
        beta2: b2,
        eps: 1e-8,
        clip,
        ..Default::default()
    };
    let mut data = TrainData {
        params,
        grads: gbuf,
        act,
        // AdamW binds its moments where the other kernels bind ids and states.
        ints: bytemuck::cast_slice(&m0).to_vec(),
        states: v0.clone(),
    };
    data = run(&g, &tk.sum_squares, base, &data, (report::PARTS as u32, 1));
    data = run(&g, &tk.sum_squares_total, base, &data, (1, 1));
    let norm = grads.norm();
    assert_close(
        &[data.act[report::NORM_SQ].sqrt()],
        &[norm],
        1e-5,
        1e-5,
        "gradient norm",
    );
    let mut off = 0;
    for spec in &w.table.specs {
        let args = AdamArgs {
            len: spec.numel() as u32,
            off: off as u32,
            decay: if spec.kind == itera_core::params::ParamKind::Matrix {
                0.1
            } else {
                0.0
            },
            ..base
        };
        data = run(&g, &tk.adamw, args, &data, groups_2d(spec.numel(), 256));
        off += spec.numel();
    }
    // CPU: clip as train::finish_step does, then AdamW::update at step 2 from the same moments.
    let s = clip / norm;
    grads.tensors.iter_mut().flatten().for_each(|x| *x *= s);
    let mut opt = AdamW::new(&w, 0.1);
    opt.step = (step - 1) as usize;
    let mut at = 0;
    for (m, v) in opt.m.tensors.iter_mut().zip(opt.v.tensors.iter_mut()) {
        let len = m.len();
        m.copy_from_slice(&m0[at..at + len]);
        v.copy_from_slice(&v0[at..at + len]);
        at += len;
    }
    opt.update(&mut w, &grads, lr).unwrap();
    let want: Vec<f32> = w.tensors.iter().flat_map(|t| t.as_f32().unwrap().to_vec()).collect();
    assert_close(&data.params, &want, 1e-6, 1e-5, "weights after AdamW");
    assert_close(
        bytemuck::cast_slice(&data.ints),
        &flat(&opt.m.tensors),
        1e-6,
        1e-5,
        "first moment",
    );
    assert_close(&data.states, &flat(&opt.v.tensors), 1e-6, 1e-5, "second moment");
}
