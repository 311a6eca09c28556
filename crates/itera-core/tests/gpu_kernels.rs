//! Every WGSL kernel against its CPU twin (`cargo test -p itera-core --features gpu`; lavapipe
//! in CI), on odd shapes — not multiples of the 64-thread workgroup or the 32-value group —
//! with tolerance atol + |ref|·rtol, for every weight precision. Without an adapter they print
//! SKIPPED and why; `cargo xtask test` installs lavapipe and sets ITERA_REQUIRE_GPU, so there
//! they must run.
#![cfg(feature = "gpu")]

mod gpu_common;

use gpu_common::{assert_close, gpu, random};
use itera_core::gpu::args::*;
use itera_core::gpu::kernels::Kernel;
use itera_core::gpu::linear::GpuMatrix;
use itera_core::gpu::oneshot::{run_blocking, Inputs};
use itera_core::gpu::Gpu;
use itera_core::layers::activations::{silu, softmax, softplus};
use itera_core::layers::{conv, moe, norm, scan};
use itera_core::matrix::Matrix;
use itera_core::rng::Pcg32;
use itera_core::sampling::{Sampler, SamplingSettings};
use itera_core::Precision;

/// Runs one kernel with its uniform block `args`; returns the arena and control words after.
fn launch<A: bytemuck::Pod>(
    g: &Gpu,
    kernel: &Kernel,
    args: A,
    inputs: Inputs,
    groups: (u32, u32),
) -> (Vec<f32>, Vec<u32>) {
    run_blocking(g, kernel, bytemuck::cast_slice(&[args]), inputs, groups).unwrap()
}

const SHAPES: [(usize, usize); 7] = [(1, 1), (3, 31), (7, 33), (65, 77), (130, 129), (5, 1000), (4099, 65)];
const PRECISIONS: [(Precision, f32); 6] = [
    (Precision::F32, 1e-5),
    (Precision::F16, 1e-5),
    (Precision::Q8, 1e-5),
    (Precision::Q4, 1e-5),
    (Precision::Q3, 1e-5),
    (Precision::Q2, 1e-5),
];

#[test]
fn matvec_matches_the_cpu_for_every_precision_on_odd_shapes() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(7);
    for (precision, tol) in PRECISIONS {
        for (rows, cols) in SHAPES {
            let m = Matrix::from_f32(rows, cols, random(&mut rng, rows * cols)).to_precision(precision);
            let x = random(&mut rng, cols);
            let y0 = random(&mut rng, rows);
            let mut want = vec![0.0; rows];
            m.matvec(&x, &mut want);
            let w = GpuMatrix::upload(&g, &m).unwrap();
            // x after 3 leading values, y after x: offsets are honoured.
            let mut act = vec![9.0; 3];
            act.extend_from_slice(&x);
            act.extend_from_slice(&y0);
            let (y_off, groups) = (3 + cols, groups_per_row(rows));
            let args = LinearArgs::matvec(rows, cols, 3, y_off);
            let inputs = || Inputs {
                weights: Some(&w),
                act: &act,
                ctl: &[0],
                ..Default::default()
            };
            let (out, _) = launch(&g, &g.kernels.matvec[precision.index()], args, inputs(), groups);
            assert_close(
                &out[y_off..],
                &want,
                tol,
                tol,
                &format!("{precision} matvec {rows}×{cols}"),
            );
            assert_eq!(out[..3 + cols], act[..3 + cols], "inputs untouched");
            let acc = args.accumulating();
            let (out, _) = launch(&g, &g.kernels.matvec[precision.index()], acc, inputs(), groups);
            let summed: Vec<f32> = want.iter().zip(&y0).map(|(a, b)| a + b).collect();
            assert_close(
                &out[y_off..],
                &summed,
                tol,
                tol,
                &format!("{precision} matvec += {rows}×{cols}"),
            );
        }
    }
}

#[test]
fn f16_weights_read_the_same_with_and_without_shader_f16() {
    // `gpu()` opens the adapter with shader-f16 when it has it (lavapipe does); this opens it
    // both ways, so the packed reader the browser's SwiftShader uses is checked natively too.
    if gpu().is_none() {
        return;
    }
    let mut rng = Pcg32::new(23);
    for native in [false, true] {
        let g = Gpu::with_options_blocking(native).unwrap();
        if native && !g.native_f16 {
            eprintln!("SKIPPED (native half): {} has no shader-f16", g.describe());
            continue;
        }
        assert_eq!(g.native_f16, native, "{}", g.describe());
        let k = Precision::F16.index();
        for (rows, cols, tokens) in [(3, 31, 1), (65, 77, 5), (130, 129, 17)] {
            let m = Matrix::from_f32(rows, cols, random(&mut rng, rows * cols)).to_precision(Precision::F16);
            let w = GpuMatrix::upload(&g, &m).unwrap();
            let x = random(&mut rng, tokens * cols);
            let mut act = x.clone();
            act.resize(tokens * (cols + rows), 0.0);
            let inputs = || Inputs {
                weights: Some(&w),
                act: &act,
                ctl: &[0],
                ..Default::default()
            };
            let y_off = tokens * cols;
            let mut want = vec![0.0; tokens * rows];
            m.matmul(&x, tokens, &mut want);
            let args = LinearArgs::matmul(rows, cols, tokens, (0, cols), (y_off, rows));
            let (out, _) = launch(&g, &g.kernels.matmul[k], args, inputs(), groups_for_tiles(rows, tokens));
            let what = format!("f16 matmul {rows}×{cols}×{tokens}, shader-f16 {native}");
            assert_close(&out[y_off..], &want, 1e-5, 1e-5, &what);
            let args = LinearArgs::matvec(rows, cols, 0, y_off);
            let (out, _) = launch(&g, &g.kernels.matvec[k], args, inputs(), groups_per_row(rows));
            let what = format!("f16 matvec {rows}×{cols}, shader-f16 {native}");
            assert_close(&out[y_off..y_off + rows], &want[..rows], 1e-5, 1e-5, &what);
        }
    }
}

#[test]
fn expert_dispatch_reads_only_the_routed_expert_and_scales_by_its_weight() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(11);
    let (experts, rows, cols) = (5, 37, 70);
    for (precision, tol) in PRECISIONS {
        let mats: Vec<Matrix> = (0..experts)
            .map(|_| Matrix::from_f32(rows, cols, random(&mut rng, rows * cols)).to_precision(precision))
            .collect();
        let w = GpuMatrix::upload_stacked(&g, &mats.iter().collect::<Vec<_>>()).unwrap();
        let x = random(&mut rng, cols);
        let mut act = x.clone();
        act.resize(cols + rows, 0.0);
        // Step 2 of a trace with stride 6 starting at word 4: slot 1 holds expert 3, weight 0.375.
        let mut ctl = vec![0u32; 4 + 3 * 6];
        ctl[0] = 2;
        ctl[4 + 2 * 6 + 2] = 3;
        ctl[4 + 2 * 6 + 3] = 0.375f32.to_bits();
        let args = LinearArgs::matvec(rows, cols, 0, cols).routed(1, 4, 6, true);
        let inputs = Inputs {
            weights: Some(&w),
            act: &act,
            ctl: &ctl,
            ..Default::default()
        };
        let (out, _) = launch(
            &g,
            &g.kernels.matvec[precision.index()],
            args,
            inputs,
            groups_per_row(rows),
        );
        let mut want = vec![0.0; rows];
        mats[3].matvec(&x, &mut want);
        want.iter_mut().for_each(|v| *v *= 0.375);
        assert_close(&out[cols..], &want, tol, tol, &format!("{precision} routed matvec"));
    }
}

#[test]
fn embedding_rows_match_the_cpu_for_every_precision() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(3);
    let (vocab, d) = (301, 77);
    for (precision, _) in PRECISIONS {
        let m = Matrix::from_f32(vocab, d, random(&mut rng, vocab * d)).to_precision(precision);
        let w = GpuMatrix::upload(&g, &m).unwrap();
        for token in [0u32, 150, 300] {
            // tokens at word 4, step 1 → tokens[1].
            let ctl = [1, 0, 0, 0, 7, token];
            let args = LinearArgs {
                token_base: 4,
                ..LinearArgs::matvec(vocab, d, 0, 5)
            };
            let inputs = Inputs {
                weights: Some(&w),
                act: &vec![0.0; 5 + d],
                ctl: &ctl,
                ..Default::default()
            };
            let (out, _) = launch(&g, &g.kernels.embed_row[precision.index()], args, inputs, groups_for(d));
            let mut want = vec![0.0; d];
            m.row_into(token as usize, &mut want);
            assert_eq!(out[5..], want[..], "{precision} embedding row {token}");
        }
    }
}

#[test]
fn rmsnorm_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(5);
    for (rows, d) in [(1, 1), (3, 77), (2, 130), (1, 288)] {
        let x = random(&mut rng, rows * d);
        let weight = random(&mut rng, d);
        let mut params = vec![0.0; 2];
        params.extend_from_slice(&weight);
        let mut act = x.clone();
        act.resize(2 * rows * d, 0.0);
        let args = NormArgs {
            d: d as u32,
            rows: rows as u32,
            x_off: 0,
            y_off: (rows * d) as u32,
            w_off: 2,
            stride: d as u32,
        };
        let inputs = Inputs {
            params: &params,
            act: &act,
            ..Default::default()
        };
        let (out, _) = launch(&g, &g.kernels.rmsnorm, args, inputs, (rows as u32, 1));
        let mut want = vec![0.0; rows * d];
        let mut rstd = vec![0.0; rows];
        norm::rmsnorm_forward(&mut want, &mut rstd, &x, &weight, d);
        assert_close(&out[rows * d..], &want, 1e-5, 1e-5, &format!("rmsnorm {rows}×{d}"));
    }
}

/// A Transformer layer's decode attention: rope_kv rotates q and k at the step's position
/// (POSITION + STEP of the control words) and appends k and v to the cache, attention scores
/// every cached position — against rope_rotate and attention_forward on odd shapes (head
/// sizes, groups of query heads, contexts past one workgroup).
#[test]
fn rope_and_attention_over_the_kv_cache_match_the_cpu() {
    use itera_core::layers::attention::{attention_forward, rope_angles, rope_rotate, rope_table, AttnDims};
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(11);
    // (query heads, kv heads, head size, position, step within the submission, context)
    for (h, kvh, hs, pos, step, context) in [
        (1, 1, 2, 0, 0, 1),
        (3, 1, 6, 4, 1, 7),
        (4, 2, 10, 70, 3, 80),
        (6, 3, 4, 129, 64, 200),
    ] {
        let a = AttnDims {
            n_heads: h,
            n_kv_heads: kvh,
            head_size: hs,
        };
        let (d, kv) = (a.dim(), a.kv_dim());
        let (q, k, v) = (random(&mut rng, d), random(&mut rng, kv), random(&mut rng, kv));
        // The cache's earlier rows (already rotated) and rows past the position (never read).
        let (keys, values) = (random(&mut rng, context * kv), random(&mut rng, context * kv));
        let (cos, sin) = rope_table(context, hs);
        let mut params = vec![0.0; 3];
        let (cos_off, sin_off) = (params.len(), params.len() + cos.len());
        params.extend(cos.iter().chain(&sin));
        // Arena: q, k, v, out, scores (h × context), key cache, value cache, after 2 values.
        let q_off = 2;
        let (k_off, v_off, out_off) = (q_off + d, q_off + d + kv, q_off + d + 2 * kv);
        let scores_off = out_off + d;
        let k_cache = scores_off + h * context;
        let v_cache = k_cache + context * kv;
        let mut act = vec![7.0; 2];
        act.extend(q.iter().chain(&k).chain(&v));
        act.resize(scores_off + h * context, 0.0);
        act.extend(keys.iter().chain(&values));
        let args = AttentionArgs {
            q_off: q_off as u32,
            k_off: k_off as u32,
            v_off: v_off as u32,
            out_off: out_off as u32,
            scores_off: scores_off as u32,
            k_cache: k_cache as u32,
            v_cache: v_cache as u32,
            cos_off: cos_off as u32,
            sin_off: sin_off as u32,
            head_size: hs as u32,
            n_heads: h as u32,
            n_kv_heads: kvh as u32,
            context: context as u32,
            scale: (1.0 / (hs as f32).sqrt()).to_bits(),
        };
        let ctl = [step as u32, 1, (pos - step) as u32, 0];
        let inputs = |act| Inputs {
            params: &params,
            act,
            ctl: &ctl,
            ..Default::default()
        };
        let (rotated, _) = launch(&g, &g.kernels.rope_kv, args, inputs(&act), (1, 1));
        let (out, _) = launch(&g, &g.kernels.attention, args, inputs(&rotated), (h as u32, 1));

        let (mut c, mut s) = (vec![0.0; hs / 2], vec![0.0; hs / 2]);
        rope_angles(pos, hs, &mut c, &mut s);
        let (mut wq, mut wk) = (q.clone(), k.clone());
        rope_rotate(&mut wq, hs, &c, &s, false);
        rope_rotate(&mut wk, hs, &c, &s, false);
        let mut cached_keys = keys[..pos * kv].to_vec();
        cached_keys.extend_from_slice(&wk);
        let mut cached_values = values[..pos * kv].to_vec();
        cached_values.extend_from_slice(&v);
        let mut want = vec![0.0; d];
        attention_forward(
            &mut want,
            &wq,
            &cached_keys,
            &cached_values,
            pos,
            1,
            a,
            None,
            &mut Vec::new(),
        );
        let what = format!("{h} heads / {kvh} kv × {hs} at position {pos}");
        assert_close(
            &rotated[q_off..q_off + d],
            &wq,
            1e-6,
            1e-6,
            &format!("rotated q, {what}"),
        );
        assert_close(
            &rotated[k_cache..k_cache + (pos + 1) * kv],
            &cached_keys,
            0.0,
            1e-6,
            &format!("key cache, {what}"),
        );
        assert_close(
            &rotated[v_cache..v_cache + (pos + 1) * kv],
            &cached_values,
            0.0,
            0.0,
            &format!("value cache, {what}"),
        );
        assert_eq!(
            &rotated[k_cache + (pos + 1) * kv..v_cache],
            &keys[(pos + 1) * kv..],
            "rows past the position untouched"
        );
        assert_close(
            &out[out_off..out_off + d],
            &want,
            1e-5,
            1e-4,
            &format!("attention, {what}"),
        );
    }
}

#[test]
fn conv_over_one_or_many_tokens_matches_the_cpu_steps_and_shifts_the_tail() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(9);
    for (channels, k, tokens) in [(1, 4, 1), (77, 4, 1), (130, 3, 1), (65, 1, 1), (77, 4, 5), (33, 4, 2)] {
        // x rows are 2·channels apart (as u sits beside z in the in_proj output).
        let x = random(&mut rng, tokens * 2 * channels);
        let tail = random(&mut rng, (k - 1) * channels);
        let w = random(&mut rng, channels * k);
        let b = random(&mut rng, channels);
        let params = [w.clone(), b.clone()].concat();
        // act: x rows, tail, y rows
        let (tail_off, y_off) = (x.len(), x.len() + tail.len());
        let act = [x.clone(), tail.clone(), vec![0.0; tokens * channels]].concat();
        let args = ConvArgs {
            channels: channels as u32,
            k: k as u32,
            x_off: 0,
            tail_off: tail_off as u32,
            y_off: y_off as u32,
            w_off: 0,
            b_off: (channels * k) as u32,
            tokens: tokens as u32,
            x_stride: 2 * channels as u32,
            y_stride: channels as u32,
        };
        let inputs = Inputs {
            params: &params,
            act: &act,
            ..Default::default()
        };
        let (out, _) = launch(&g, &g.kernels.conv, args, inputs, groups_for(channels));
        let mut want = vec![0.0; tokens * channels];
        let mut want_tail = tail.clone();
        for (t, y) in want.chunks_exact_mut(channels).enumerate() {
            conv::conv_step(y, &x[t * 2 * channels..], &mut want_tail, &w, &b, channels, k);
            y.iter_mut().for_each(|v| *v = silu(*v));
        }
        let what = format!("conv {channels} channels, K {k}, {tokens} tokens");
        assert_close(&out[y_off..], &want, 1e-5, 1e-5, &what);
        assert_eq!(out[tail_off..y_off], want_tail[..], "{what}: tail");
    }
}

#[test]
fn scan_over_one_or_many_tokens_matches_the_cpu_steps() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(13);
    for (channels, n, tokens) in [(1, 1, 1), (67, 16, 1), (130, 5, 1), (67, 16, 6), (33, 3, 3)] {
        // Per token one input row [u (C) | dt (C) | B (N) | C (N) | z (C)] and one output row.
        let row = 3 * channels + 2 * n;
        let inputs_rows = random(&mut rng, tokens * row);
        let h = random(&mut rng, channels * n);
        let dt_b = random(&mut rng, channels);
        let a_log = random(&mut rng, channels * n);
        let d_skip = random(&mut rng, channels);
        let params = [dt_b.clone(), a_log.clone(), d_skip.clone()].concat();
        let (h_off, y_off) = (inputs_rows.len(), inputs_rows.len() + h.len());
        let act = [inputs_rows.clone(), h.clone(), vec![0.0; tokens * channels]].concat();
        let (c, n32) = (channels as u32, n as u32);
        let args = ScanArgs {
            channels: c,
            n: n32,
            u_off: 0,
            dt_off: c,
            b_off: 2 * c,
            z_off: 2 * c + 2 * n32,
            h_off: h_off as u32,
            y_off: y_off as u32,
            dt_b_off: 0,
            a_log_off: c,
            d_skip_off: c + c * n32,
            tokens: tokens as u32,
            in_stride: row as u32,
            out_stride: c,
        };
        let inputs = Inputs {
            params: &params,
            act: &act,
            ..Default::default()
        };
        let (out, _) = launch(&g, &g.kernels.scan, args, inputs, groups_for(channels));
        let a = itera_core::layers::ssm::a_matrix(&a_log);
        let mut h_want = h.clone();
        let mut want = Vec::new();
        for r in inputs_rows.chunks_exact(row) {
            let (u, rest) = r.split_at(channels);
            let (dt_raw, rest) = rest.split_at(channels);
            let (bc, z) = rest.split_at(2 * n);
            let dt: Vec<f32> = dt_raw.iter().zip(&dt_b).map(|(x, b)| softplus(x + b)).collect();
            let mut y = vec![0.0; channels];
            scan::scan_step(&mut y, &mut h_want, u, &dt, &a, &bc[..n], &bc[n..], &d_skip, n);
            y.iter_mut().zip(z).for_each(|(y, z)| *y *= silu(*z));
            want.extend(y);
        }
        let what = format!("scan {channels}×{n}, {tokens} tokens");
        assert_close(&out[h_off..y_off], &h_want, 1e-5, 1e-5, &format!("{what}: h"));
        assert_close(&out[y_off..], &want, 1e-5, 1e-5, &format!("{what}: y"));
    }
}

#[test]
fn tiled_matmul_matches_the_cpu_for_every_precision_on_odd_shapes() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(29);
    for (precision, tol) in PRECISIONS {
        for (rows, cols, tokens) in [(1, 1, 1), (17, 33, 3), (65, 77, 17), (130, 129, 5), (4099, 65, 2)] {
            let m = Matrix::from_f32(rows, cols, random(&mut rng, rows * cols)).to_precision(precision);
            let w = GpuMatrix::upload(&g, &m).unwrap();
            // x rows padded to cols + 2 apart, y rows to rows + 1 apart: strides are honoured.
            let (xs, ys) = (cols + 2, rows + 1);
            let x = random(&mut rng, tokens * xs);
            let mut act = x.clone();
            act.resize(x.len() + tokens * ys, 0.0);
            let args = LinearArgs::matmul(rows, cols, tokens, (0, xs), (x.len(), ys));
            let inputs = Inputs {
                weights: Some(&w),
                act: &act,
                ctl: &[0],
                ..Default::default()
            };
            let kernel = &g.kernels.matmul[precision.index()];
            let (out, _) = launch(&g, kernel, args, inputs, groups_for_tiles(rows, tokens));
            let dense: Vec<f32> = x.chunks_exact(xs).flat_map(|r| r[..cols].to_vec()).collect();
            let mut want = vec![0.0; tokens * rows];
            m.matmul(&dense, tokens, &mut want);
            for t in 0..tokens {
                let got = &out[x.len() + t * ys..][..rows];
                assert_close(
                    got,
                    &want[t * rows..][..rows],
                    tol,
                    tol,
                    &format!("{precision} matmul {rows}×{cols}, token {t} of {tokens}"),
                );
            }
        }
    }
}

#[test]
fn swiglu_gate_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(17);
    // Three tokens (the prefill's layout), each token's a and b `stride` after the last's.
    let (n, tokens, stride) = (77, 3, 2 * 77 + 5);
    let act = random(&mut rng, tokens * stride);
    let args = SwigluArgs {
        n: n as u32,
        a_off: 0,
        b_off: n as u32,
        tokens: tokens as u32,
        stride: stride as u32,
    };
    let inputs = Inputs {
        act: &act,
        ..Default::default()
    };
    let (out, _) = launch(&g, &g.kernels.swiglu, args, inputs, (groups_for(n).0, tokens as u32));
    for t in 0..tokens {
        let at = t * stride;
        let want: Vec<f32> = (0..n).map(|i| silu(act[at + i]) * act[at + n + i]).collect();
        assert_close(&out[at..at + n], &want, 1e-6, 1e-5, "swiglu");
        assert_eq!(
            out[at + n..at + stride],
            act[at + n..at + stride],
            "b and the gap untouched"
        );
    }
}

#[test]
fn routing_matches_the_cpu_including_ties() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(19);
    let cases: Vec<(Vec<f32>, usize)> = vec![
        (vec![0.3, 0.3, -1.0, 0.3], 2),
        (vec![1.0; 7], 3),
        (random(&mut rng, 5), 2),
        (random(&mut rng, 16), 4),
        (random(&mut rng, 3), 1),
    ];
    for (logits, k) in cases {
        let e = logits.len();
        // Step 1, trace at word 4, stride 2k: this layer's slots at 4 + 2k.
        let mut ctl = vec![0u32; 4 + 4 * k];
        ctl[0] = 1;
        let args = RouteArgs {
            experts: e as u32,
            k: k as u32,
            logits_off: 0,
            route_base: 4,
            route_stride: 2 * k as u32,
            stride: 0,
        };
        let inputs = Inputs {
            act: &logits,
            ctl: &ctl,
            ..Default::default()
        };
        let (_, ctl_out) = launch(&g, &g.kernels.route, args, inputs, (1, 1));
        let mut probs = logits.clone();
        softmax(&mut probs);
        let (mut experts, mut weights) = (vec![0; k], vec![0.0; k]);
        moe::route(&probs, &mut experts, &mut weights);
        let slots = &ctl_out[4 + 2 * k..];
        let got_experts: Vec<usize> = slots.iter().step_by(2).map(|&e| e as usize).collect();
        let got_weights: Vec<f32> = slots.iter().skip(1).step_by(2).map(|&b| f32::from_bits(b)).collect();
        assert_eq!(got_experts, experts, "experts for {logits:?}");
        assert_close(&got_weights, &weights, 1e-6, 1e-5, "routing weights");
    }
}

#[test]
fn sampling_matches_its_cpu_twin_for_every_setting() {
    let Some(g) = gpu() else { return };
    let mut rng = Pcg32::new(23);
    let settings = |temperature, top_k, top_p, seed| SamplingSettings {
        temperature,
        top_k,
        top_p,
        seed,
    };
    let mut checked = 0;
    for vocab in [1, 7, 1001, 4096] {
        let mut logits: Vec<f32> = random(&mut rng, vocab).iter().map(|v| v * 6.0).collect();
        if vocab > 7 {
            logits[vocab / 3] = logits.iter().fold(f32::MIN, |m, &x| m.max(x)); // a tie for the max
        }
        for s in [
            settings(0.0, 0, 1.0, 0),
            settings(1.0, 0, 1.0, 1),
            settings(0.8, 40, 1.0, 2),
            settings(0.8, 0, 0.9, u64::MAX - 5),
            settings(1.3, 5, 0.5, 1 << 40),
            settings(0.5, 1, 1.0, 9),
        ] {
            for position in [0u32, 1, 17, 1000] {
                let logprobs_base = 5 + 2;
                let ctl = [0, 0, position, 0, 0, 0, 0, 0, 0];
                let args = SampleArgs {
                    vocab: vocab as u32,
                    logits_off: 0,
                    temperature: s.temperature,
                    top_k: s.top_k as u32,
                    top_p: s.top_p,
                    seed_lo: s.seed as u32,
                    seed_hi: (s.seed >> 32) as u32,
                    tokens_base: 4,
                    logprobs_base,
                };
                let inputs = Inputs {
                    act: &logits,
                    ctl: &ctl,
                    ..Default::default()
                };
                let (_, out) = launch(&g, &g.kernels.sample, args, inputs, (1, 1));
                let want = Sampler::new(s).unwrap().sample(&logits, position);
                assert_eq!(out[5], want, "vocab {vocab} {s:?} position {position}");
                assert_eq!(out[0], 1, "the step counter advances");
                let max = logits.iter().fold(f32::MIN, |m, &x| m.max(x));
                let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
                let logprob = f32::from_bits(out[logprobs_base as usize + 1]);
                assert!(
                    (logprob - (logits[want as usize] - lse)).abs() < 1e-4,
                    "log-prob {logprob}"
                );
                checked += 1;
            }
        }
    }
    eprintln!("{checked} sampled tokens identical to the CPU twin");
}
