//! The model's layers as free functions in forward/backward pairs (llm.c style): each
//! forward fills what its backward needs, and each backward ADDS into its gradients.

pub mod activations;
pub mod attention;
pub mod conv;
pub mod linear;
pub mod loss;
pub mod moe;
pub mod norm;
pub mod scan;
pub mod scratch;
pub mod ssm;
pub mod swiglu;
