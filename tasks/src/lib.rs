//! The language task suite: families (pick, place, stack, sort), instruction templates with
//! seen/unseen splits (data files in `tasks/data/`), success checks and scripted experts.

pub mod expert;
pub mod families;
pub mod language;
pub mod layout;
pub mod runner;
pub mod vqa;

pub use expert::ExpertNoise;
pub use language::{Language, Split};
use rand::SeedableRng;

/// The task families, in order.
pub const FAMILIES: &[&str] = &["pick", "place", "stack", "sort"];

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown task family {0:?}; expected one of pick, place, stack, sort, all")]
    UnknownFamily(String),
    #[error("unknown split {0:?}; expected seen or unseen")]
    UnknownSplit(String),
    #[error("task data {file}: {cause}")]
    Data { file: String, cause: String },
    #[error("layout: {0}")]
    Layout(String),
    /// The acting agent (e.g. a learned policy) failed.
    #[error("agent: {0}")]
    Agent(String),
    #[error(transparent)]
    Sim(#[from] vla_sim::SimError),
}

/// Expand "all" into every family; validate names.
pub fn parse_suite(suite: &str) -> Result<Vec<&'static str>, TaskError> {
    if suite == "all" {
        return Ok(FAMILIES.to_vec());
    }
    FAMILIES
        .iter()
        .find(|f| **f == suite)
        .map(|f| vec![*f])
        .ok_or_else(|| TaskError::UnknownFamily(suite.to_string()))
}

/// Build a task instance of a family for a split. `noise` is how the expert's executed
/// actions depart from its labels (a plain `f32` is Gaussian σ in m); `noise_seed` seeds it.
pub fn make_task(
    family: &str,
    split: Split,
    language: &Language,
    noise: impl Into<ExpertNoise>,
    noise_seed: u64,
) -> Result<Box<dyn vla_sim::Task>, TaskError> {
    let common = families::Common {
        language: language.clone(),
        split,
        expert_noise: noise.into(),
        noise_rng: rand_chacha::ChaCha8Rng::seed_from_u64(noise_seed),
        pushes: Default::default(),
        clean_action: None,
        subtask: None,
        held_out: None,
    };
    Ok(match family {
        "pick" => Box::new(families::Pick::new(common)),
        "place" => Box::new(families::Place::new(common)),
        "stack" => Box::new(families::Stack::new(common)),
        "sort" => Box::new(families::Sort::new(common)),
        other => return Err(TaskError::UnknownFamily(other.to_string())),
    })
}
