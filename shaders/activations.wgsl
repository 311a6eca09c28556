// The activation functions every kernel shares, compiled in front of the files that name this
// prelude on their first line (gpu/kernels.rs, gpu/train/kernels.rs). CPU twins:
// layers::activations (the same formulas; exp differs between implementations in the last ulp).

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// silu(x) = x·σ(x).
fn silu(x: f32) -> f32 {
    return x * sigmoid(x);
}

// d silu / dx = σ(x)·(1 + x·(1 − σ(x))).
fn silu_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    return s * (1.0 + x * (1.0 - s));
}

// softplus(x) = log(1 + eˣ), x itself past 20 (where they agree in f32).
fn softplus(x: f32) -> f32 {
    return select(log(1.0 + exp(x)), x, x > 20.0);
}
