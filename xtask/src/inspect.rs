//! `cargo xtask inspect`: dumps tokens, logits, the loss parts and the gradient of the loss
//! w.r.t. every parameter for one text, for comparison with an independent implementation;
//! for a model of either family (`family` in the dump's metadata, gradients under the
//! family's tensor names).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use itera_core::family::Architecture;
use itera_core::model::{BatchDims, LossWeights};
use itera_core::tokenizer::Tokenizer;
use itera_core::{Grads, Precision, Weights};
use safetensors::tensor::{Dtype, TensorView};

use crate::models::{self, AnyModel};

#[derive(Args)]
pub struct InspectArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    text: String,
    #[arg(long)]
    out: PathBuf,
    /// Weight α of the load-balancing loss in `loss = CE + α·aux`.
    #[arg(long, default_value_t = 0.01)]
    alpha: f32,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

pub fn run(a: InspectArgs) -> Result<()> {
    match models::load(&a.model, a.tokenizer.as_deref())? {
        AnyModel::Itera { weights, tokenizer } => dump(&a, &weights, &tokenizer),
        AnyModel::Transformer { weights, tokenizer } => dump(&a, &weights, &tokenizer),
        AnyModel::Llama2 { .. } => bail!("inspect works on models of this project, not llama2.c checkpoints"),
    }
}

fn dump<A: Architecture>(a: &InspectArgs, weights: &Weights<A>, tokenizer: &Tokenizer) -> Result<()> {
    // Gradients are defined on the f32 weights: quantized files are dequantized first.
    let w = weights.to_precision(Precision::F32);
    let tokens = tokenizer.encode(&a.text)?;
    if tokens.len() < 2 {
        bail!(
            "the text encodes to {} token(s); the loss needs at least 2",
            tokens.len()
        );
    }
    let bd = BatchDims {
        batch: 1,
        t: tokens.len(),
    };
    let lw = LossWeights {
        aux_alpha: a.alpha,
        ..LossWeights::default()
    };
    let mut cache = A::Cache::default();
    let mut grads = Grads::zeros(&w.table);
    let parts = A::loss(&w, &tokens, bd, None, lw, &mut cache, Some(&mut grads))?;

    let tokens_i64: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let v = A::vocab_size(&w.config);
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
        (
            "tokens".into(),
            Dtype::I64,
            vec![tokens.len()],
            bytemuck::cast_slice(&tokens_i64).to_vec(),
        ),
        (
            "logits".into(),
            Dtype::F32,
            vec![tokens.len(), v],
            bytemuck::cast_slice(A::logits(&cache)).to_vec(),
        ),
        ("loss".into(), Dtype::F32, vec![], parts.total.to_le_bytes().to_vec()),
        ("ce".into(), Dtype::F32, vec![], parts.ce.to_le_bytes().to_vec()),
        ("aux".into(), Dtype::F32, vec![], parts.aux.to_le_bytes().to_vec()),
    ];
    for (spec, g) in w.specs().iter().zip(&grads.tensors) {
        tensors.push((
            format!("grad.{}", spec.name),
            Dtype::F32,
            spec.shape.clone(),
            bytemuck::cast_slice(g).to_vec(),
        ));
    }
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    // What decoding the text's last token costs, from the config (`Architecture::token_cost`).
    let cost = A::token_cost(&w.config, tokens.len());
    let meta = HashMap::from([
        ("model".to_string(), a.model.display().to_string()),
        ("alpha".to_string(), a.alpha.to_string()),
        ("family".to_string(), A::FAMILY.to_string()),
        ("config".to_string(), serde_json::to_string(&w.config)?),
        ("flops_per_token".to_string(), cost.flops.to_string()),
        ("state_bytes".to_string(), cost.state_bytes.to_string()),
    ]);
    safetensors::serialize_to_file(views, Some(meta), &a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "wrote {}: {} tokens, loss {:.5} (CE {:.5} + {} × aux {:.5}), {} gradients; decoding the last \
         token: {} FLOPs, {} bytes of state",
        a.out.display(),
        tokens.len(),
        parts.total,
        parts.ce,
        a.alpha,
        parts.aux,
        w.specs().len(),
        cost.flops,
        cost.state_bytes
    );
    Ok(())
}
