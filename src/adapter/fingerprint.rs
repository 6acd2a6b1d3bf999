//! Identifying a base model by its weights, so an adapter is never loaded onto the wrong one.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// One tensor's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorPrint {
    /// Parameter path.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// FNV-1a hash of the values as little-endian f32, hex.
    pub hash: String,
}

/// The names, shapes and value hashes of every float tensor of a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Per tensor, in visiting order.
    pub tensors: Vec<TensorPrint>,
    /// Hash of all the per-tensor hashes.
    pub hash: String,
}

/// FNV-1a, 64 bits: a fast hash for telling data apart (not for security).
pub(crate) fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Fingerprint {
    /// Reads every float tensor of `model` once.
    pub fn of<B: Backend, M: Module<B>>(model: &M) -> Self {
        Self::of_except(model, &[])
    }

    /// Like [`Fingerprint::of`], leaving out the tensors at `skip` (those an adapter file
    /// carries itself, such as a retrained head).
    pub fn of_except<B: Backend, M: Module<B>>(model: &M, skip: &[String]) -> Self {
        struct Prints(Vec<String>, Vec<TensorPrint>);
        impl<B: Backend> ModuleVisitor<B> for Prints {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.0.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.0.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                let data = p.val().to_data().convert::<f32>();
                let bytes = data.as_bytes().to_vec();
                self.1.push(TensorPrint {
                    name: self.0.join("."),
                    shape: data.shape.to_vec(),
                    hash: format!("{:016x}", fnv(bytes)),
                });
            }
        }
        let mut v = Prints(Vec::new(), Vec::new());
        model.visit(&mut v);
        v.1.retain(|t| !skip.contains(&t.name));
        let hash = format!(
            "{:016x}",
            fnv(v.1.iter().flat_map(|t| t.hash.bytes().collect::<Vec<_>>()))
        );
        Self { tensors: v.1, hash }
    }

    /// What differs from `other`, one line per tensor (missing, extra, other shape or
    /// values); empty when they are the same model.
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.tensors {
            match other.tensors.iter().find(|o| o.name == t.name) {
                None => out.push(format!("{} is missing in the other model", t.name)),
                Some(o) if o.shape != t.shape => {
                    out.push(format!("{}: shape {:?} vs {:?}", t.name, t.shape, o.shape))
                }
                Some(o) if o.hash != t.hash => out.push(format!("{}: different values", t.name)),
                Some(_) => {}
            }
        }
        for o in &other.tensors {
            if !self.tensors.iter().any(|t| t.name == o.name) {
                out.push(format!("{} is not in this model", o.name));
            }
        }
        out
    }
}
