//! GPU kernels against their CPU twins (`cargo test -p itera-core --features gpu`; lavapipe in
//! CI): every shape is odd — not a multiple of the 64-thread workgroup or the 32-value q8
//! group — and the tolerance is atol + |ref|·rtol. Without an adapter they print SKIPPED and
//! why; `cargo xtask test` installs lavapipe and sets ITERA_REQUIRE_GPU, so there they must run.
#![cfg(feature = "gpu")]

use itera_core::gpu::matvec::GpuMatrix;
use itera_core::gpu::Gpu;
use itera_core::matrix::Matrix;
use itera_core::rng::Pcg32;
use itera_core::Precision;

fn gpu() -> Option<Gpu> {
    match Gpu::new_blocking() {
        Ok(g) => {
            eprintln!("GPU: {}", g.describe());
            Some(g)
        }
        Err(e) if std::env::var_os("ITERA_REQUIRE_GPU").is_some() => {
            panic!("ITERA_REQUIRE_GPU is set but {e} (is mesa-vulkan-drivers installed?)")
        }
        Err(e) => {
            eprintln!("SKIPPED: {e} (install mesa-vulkan-drivers for lavapipe)");
            None
        }
    }
}

const SHAPES: [(usize, usize); 7] = [(1, 1), (3, 31), (7, 33), (65, 77), (130, 129), (5, 1000), (4099, 65)];

fn random(rng: &mut Pcg32, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

fn check(gpu: &Gpu, precision: Precision, atol: f32, rtol: f32) {
    let mut rng = Pcg32::new(7);
    for (rows, cols) in SHAPES {
        let m = Matrix::from_f32(rows, cols, random(&mut rng, rows * cols)).to_precision(precision);
        let x = random(&mut rng, cols);
        let mut want = vec![0.0; rows];
        m.matvec(&x, &mut want);
        let got = GpuMatrix::upload(gpu, &m).unwrap().matvec(gpu, &x).unwrap();
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= atol + w.abs() * rtol,
                "{precision} {rows}×{cols} row {r}: GPU {g} vs CPU {w}"
            );
        }
    }
}

#[test]
fn matvec_f32_matches_the_cpu_on_odd_shapes() {
    if let Some(g) = gpu() {
        check(&g, Precision::F32, 1e-5, 1e-5);
    }
}

#[test]
fn matvec_q8_matches_the_cpu_on_odd_shapes() {
    if let Some(g) = gpu() {
        check(&g, Precision::Q8, 1e-5, 1e-5);
    }
}

#[test]
fn formats_without_a_kernel_are_a_clear_error() {
    if let Some(g) = gpu() {
        let m = Matrix::from_f32(3, 5, vec![0.5; 15]).to_precision(Precision::Q4);
        let e = GpuMatrix::upload(&g, &m)
            .err()
            .expect("q4 has no kernel yet")
            .to_string();
        assert!(e.contains("q4") && e.contains("no GPU kernel"), "{e}");
        let f = GpuMatrix::upload(&g, &Matrix::from_f32(3, 5, vec![0.5; 15])).unwrap();
        assert!(f.matvec(&g, &[1.0; 4]).is_err());
    }
}
