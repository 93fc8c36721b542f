//! Running episodes of the suite in K parallel environments, with any agent (the scripted
//! experts here; the learned policy in `vla-model`), collecting success and a digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vla_core::{Action, Observation};
use vla_sim::{Env, EnvConfig, InterventionCounts, RobotDescription, StepResult, VecEnv};

use crate::{make_task, Language, Split, TaskError};

/// One episode to run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpisodeSpec {
    pub family: String,
    pub split: Split,
    pub seed: u64,
    /// Position in the requested order (digests combine in this order).
    pub index: usize,
}

/// How one episode ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpisodeOutcome {
    pub spec: EpisodeSpec,
    pub instruction: String,
    pub success: bool,
    pub steps: usize,
    pub interventions: InterventionCounts,
    /// SHA-256 of every action and the final object poses.
    pub digest: String,
    /// How much of the task was done at the end, in `[0, 1]` (the family's reward: blocks
    /// in their bins for `sort`; 0 or 1 for single-step families).
    #[serde(default)]
    pub progress: f32,
    /// Steps whose action undid the one before (see [`Reversals`]).
    #[serde(default)]
    pub reversals: usize,
    /// What the instruction held out from training, as the episode was drawn ("color",
    /// "combo", "phrasing"; `None` on the seen split). A `place` episode's bin may show a
    /// held-out colour whatever it was drawn for: bins are distractors' colours.
    #[serde(default)]
    pub held_out: Option<String>,
}

/// Counts the steps of an episode whose action undoes the step before: a move back against
/// the last one, or a gripper command changed right after it had changed. Scripted experts
/// almost never do this; a one-frame policy caught in a two-step limit cycle (up, down, up …;
/// close, open, close …) does it every step, which its success rate alone does not show.
#[derive(Clone, Debug, Default)]
pub struct Reversals {
    previous: Option<Action>,
    gripper_changed: bool,
    /// Reversing steps so far.
    pub count: usize,
}

impl Reversals {
    /// Two moves count as opposed when their dot product is below −(1 cm)², e.g. 1 cm up
    /// then 1 cm down: smaller corrections are steering, not a cycle.
    const OPPOSED_M2: f32 = 0.01 * 0.01;

    /// Takes the next executed action.
    pub fn step(&mut self, action: &Action) {
        if let Some(previous) = &self.previous {
            let [a, b] = [previous.delta_position(), action.delta_position()];
            let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let changed = previous.gripper_closed() != action.gripper_closed();
            if dot < -Self::OPPOSED_M2 || (changed && self.gripper_changed) {
                self.count += 1;
            }
            self.gripper_changed = changed;
        }
        self.previous = Some(*action);
    }
}

/// Success counts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
    /// 95 % Wilson score interval of the success rate `[low, high]`.
    #[serde(default)]
    pub wilson95: [f64; 2],
    /// Mean of the episodes' final progress (see [`EpisodeOutcome::progress`]): for
    /// multi-step families it shows partial success before full success does.
    #[serde(default)]
    pub mean_progress: f64,
    /// Episodes per final progress (the fraction, two decimals: "0.67" is two of three
    /// blocks sorted).
    #[serde(default)]
    pub progress_counts: BTreeMap<String, usize>,
    /// Control steps run, and those whose action undid the one before ([`Reversals`]).
    #[serde(default)]
    pub steps: usize,
    #[serde(default)]
    pub reversals: usize,
    /// `reversals / steps`: near 0 for the experts; a policy's share shows how much of its
    /// time goes to two-step limit cycles.
    #[serde(default)]
    pub reversal_share: f64,
    /// The same counts per kind of what the instruction held out (the unseen split: a new
    /// colour, a new colour–object pairing, a new phrasing), as VIMA-Bench reports its
    /// generalisation levels apart: co-training on vision-language data can teach colours
    /// and objects, not phrasings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_held_out: BTreeMap<String, Tally>,
}

impl Tally {
    /// Some episode ended part-way (a multi-step family with some steps done).
    pub fn has_partial_progress(&self) -> bool {
        self.progress_counts
            .keys()
            .any(|k| k != "0.00" && k != "1.00")
    }

    /// Several tallies as one (the episodes of several evaluation seeds together), its rate,
    /// interval and progress over all their episodes.
    pub fn pooled<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> Tally {
        let mut all = Tally::default();
        for t in tallies {
            let episodes = all.episodes + t.episodes;
            all.mean_progress = (all.mean_progress * all.episodes as f64
                + t.mean_progress * t.episodes as f64)
                / episodes.max(1) as f64;
            for (k, n) in &t.progress_counts {
                *all.progress_counts.entry(k.clone()).or_default() += n;
            }
            all.episodes = episodes;
            all.successes += t.successes;
            all.steps += t.steps;
            all.reversals += t.reversals;
            for (kind, k) in &t.by_held_out {
                let merged = match all.by_held_out.get(kind) {
                    Some(a) => Tally::pooled([a, k]),
                    None => k.clone(),
                };
                all.by_held_out.insert(kind.clone(), merged);
            }
        }
        all.success_rate = all.successes as f64 / all.episodes.max(1) as f64;
        all.reversal_share = all.reversals as f64 / all.steps.max(1) as f64;
        all.wilson95 = wilson_interval(all.successes, all.episodes, 1.959_964);
        all
    }

    fn add(&mut self, o: &EpisodeOutcome) {
        self.count(o);
        if let Some(kind) = &o.held_out {
            self.by_held_out.entry(kind.clone()).or_default().count(o);
        }
    }

    fn count(&mut self, o: &EpisodeOutcome) {
        let (success, progress) = (o.success, o.progress);
        self.steps += o.steps;
        self.reversals += o.reversals;
        self.reversal_share = self.reversals as f64 / self.steps.max(1) as f64;
        self.mean_progress = (self.mean_progress * self.episodes as f64 + progress as f64)
            / (self.episodes + 1) as f64;
        *self
            .progress_counts
            .entry(format!("{progress:.2}"))
            .or_default() += 1;
        self.episodes += 1;
        self.successes += success as usize;
        self.success_rate = self.successes as f64 / self.episodes as f64;
        self.wilson95 = wilson_interval(self.successes, self.episodes, 1.959_964);
    }
}

/// Wilson score interval for `k` successes in `n` trials at `z` standard deviations: unlike
/// the normal approximation it stays inside [0, 1] and is honest at 0 % or 100 %.
pub fn wilson_interval(k: usize, n: usize, z: f64) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

/// The report printed by `vla expert` / `vla eval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteReport {
    pub suite: String,
    pub split: Split,
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
    pub per_family: BTreeMap<String, Tally>,
    pub digest: String,
}

impl SuiteReport {
    pub fn from_outcomes(suite: &str, split: Split, outcomes: &[EpisodeOutcome]) -> Self {
        let mut sorted: Vec<&EpisodeOutcome> = outcomes.iter().collect();
        sorted.sort_by_key(|o| o.spec.index);
        let mut total = Tally::default();
        let mut per_family: BTreeMap<String, Tally> = BTreeMap::new();
        let mut hasher = Sha256::new();
        for o in &sorted {
            total.add(o);
            per_family.entry(o.spec.family.clone()).or_default().add(o);
            hasher.update(o.digest.as_bytes());
        }
        SuiteReport {
            suite: suite.to_string(),
            split,
            episodes: total.episodes,
            successes: total.successes,
            success_rate: total.success_rate,
            per_family,
            digest: hex(&hasher.finalize()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Episode specs: `episodes` per family, seeds derived from the base seed.
pub fn episode_specs(
    families: &[&str],
    split: Split,
    episodes: usize,
    seed: u64,
) -> Vec<EpisodeSpec> {
    let mut specs = Vec::new();
    for e in 0..episodes {
        for (f, family) in families.iter().enumerate() {
            // splitmix64 of (seed, family, episode): independent, reproducible seeds.
            let mut z = seed ^ ((f as u64) << 48) ^ (e as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            specs.push(EpisodeSpec {
                family: family.to_string(),
                split,
                seed: z,
                index: specs.len(),
            });
        }
    }
    specs
}

/// One process's part of a run's episodes (`--shard i/N`): the `index`-th of `count`
/// contiguous blocks of the episode specs, so the shards' seeds are disjoint, their union is
/// the unsharded run, and concatenating them in shard order restores its episode order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// This shard's specs of `specs` (the whole run's, in order).
    pub fn select(&self, specs: Vec<EpisodeSpec>) -> Vec<EpisodeSpec> {
        let range = self.range(specs.len());
        specs
            .into_iter()
            .skip(range.start)
            .take(range.len())
            .collect()
    }

    /// Positions of this shard's items among `n`: sizes differ by at most one.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        n * self.index / self.count..n * (self.index + 1) / self.count
    }

    /// `shard-002-of-004`: the name of this shard's dataset directory or report.
    pub fn tag(&self) -> String {
        format!("shard-{:03}-of-{:03}", self.index, self.count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `i/N` with `0 <= i < N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?} is not of the form i/N (e.g. 0/4)"))?;
        let parse = |v: &str, what: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|e| format!("shard {s:?}: {what} {v:?} is not a count ({e})"))
        };
        let (index, count) = (parse(i, "index")?, parse(n, "shard count")?);
        if count == 0 || index >= count {
            return Err(format!(
                "shard {s:?}: the index must be below the shard count (0/{count}..{}/{count})",
                count.saturating_sub(1)
            ));
        }
        Ok(Shard { index, count })
    }
}

/// Something that chooses actions: the expert, or a learned policy.
pub trait Agent {
    /// Called when slot `slot` starts a new episode.
    fn begin(&mut self, _slot: usize, _instruction: &str) {}
    /// Actions for the active slots, in the same order (batched so policies can batch).
    fn act(
        &mut self,
        envs: &mut [Env],
        active: &[usize],
        observations: &[&Observation],
    ) -> Result<Vec<Action>, TaskError>;
}

/// The scripted experts of each family (privileged state).
pub struct ExpertAgent;

impl Agent for ExpertAgent {
    fn act(
        &mut self,
        envs: &mut [Env],
        active: &[usize],
        _obs: &[&Observation],
    ) -> Result<Vec<Action>, TaskError> {
        active
            .iter()
            .map(|i| envs[*i].expert_action().map_err(TaskError::from))
            .collect()
    }
}

/// What the runner reports to its caller while episodes run (datasets, GIFs, progress).
pub enum Event<'a> {
    Reset {
        slot: usize,
        spec: &'a EpisodeSpec,
        instruction: &'a str,
        observation: &'a Observation,
    },
    Step {
        slot: usize,
        spec: &'a EpisodeSpec,
        /// What was executed.
        action: &'a Action,
        /// What to learn from: the expert's clean action when noise was injected, else
        /// the executed action.
        label: &'a Action,
        /// The expert's sub-task at this step (when the expert was asked; see
        /// [`vla_sim::Task::subtask`]).
        subtask: Option<&'a str>,
        result: &'a StepResult,
        previous: &'a Observation,
    },
    Done {
        slot: usize,
        outcome: &'a EpisodeOutcome,
    },
}

/// Where and how episodes run.
#[derive(Clone, Debug)]
pub struct RunSetup<'a> {
    /// Parallel environments.
    pub envs: usize,
    pub config: &'a EnvConfig,
    pub robot: &'a RobotDescription,
    pub language: &'a Language,
    /// How the expert's executed actions depart from its labels.
    pub noise: crate::ExpertNoise,
}

/// Run the episodes. `on_event` sees every reset, step and end; return `false` from it to
/// stop early (e.g. on Ctrl-C) after the episodes in flight finish.
pub fn run(
    specs: &[EpisodeSpec],
    setup: &RunSetup,
    agent: &mut dyn Agent,
    on_event: &mut dyn FnMut(Event) -> bool,
) -> Result<Vec<EpisodeOutcome>, TaskError> {
    let RunSetup {
        envs: k,
        config,
        robot: description,
        language,
        noise,
    } = *setup;
    let k = k.clamp(1, specs.len().max(1));
    let mut envs = Vec::with_capacity(k);
    for _ in 0..k {
        let task = make_task("pick", Split::Seen, language, noise, 0)?;
        envs.push(Env::new(task, config.clone(), description.clone()));
    }
    let mut vec_env = VecEnv::new(envs)?;
    let mut queue = specs.iter();
    let mut slots: Vec<Option<(EpisodeSpec, Sha256, Observation, Reversals)>> =
        (0..k).map(|_| None).collect();
    let mut outcomes = Vec::new();
    let mut stopping = false;

    loop {
        // Fill idle slots.
        for (slot, occupant) in slots.iter_mut().enumerate() {
            if occupant.is_some() || stopping {
                continue;
            }
            let Some(spec) = queue.next() else { continue };
            let task = make_task(
                &spec.family,
                spec.split,
                language,
                noise,
                spec.seed ^ 0xA5A5,
            )?;
            vec_env.envs[slot].set_task(task);
            let obs = vec_env.reset_one(slot, spec.seed)?;
            let instruction = vec_env.envs[slot].instruction().to_string();
            agent.begin(slot, &instruction);
            let mut hasher = Sha256::new();
            hasher.update(spec.family.as_bytes());
            hasher.update(spec.seed.to_le_bytes());
            hasher.update(instruction.as_bytes());
            if !on_event(Event::Reset {
                slot,
                spec,
                instruction: &instruction,
                observation: &obs,
            }) {
                stopping = true;
            }
            *occupant = Some((spec.clone(), hasher, obs, Reversals::default()));
        }
        let active: Vec<usize> = (0..k).filter(|s| slots[*s].is_some()).collect();
        if active.is_empty() {
            break;
        }
        let observations: Vec<&Observation> = active
            .iter()
            .filter_map(|s| slots[*s].as_ref().map(|x| &x.2))
            .collect();
        let actions = agent.act(&mut vec_env.envs, &active, &observations)?;
        let labels: Vec<Option<Action>> = active
            .iter()
            .map(|i| vec_env.envs[*i].take_expert_label())
            .collect();
        let subtasks: Vec<Option<String>> =
            active.iter().map(|i| vec_env.envs[*i].subtask()).collect();
        let results = vec_env.step_subset(&active, &actions)?;
        for ((((slot, action), label), subtask), result) in active
            .iter()
            .zip(&actions)
            .zip(&labels)
            .zip(&subtasks)
            .zip(results)
        {
            let Some((spec, mut hasher, previous, mut reversals)) = slots[*slot].take() else {
                continue;
            };
            reversals.step(action);
            for v in action.0 {
                hasher.update(v.to_bits().to_le_bytes());
            }
            if !on_event(Event::Step {
                slot: *slot,
                spec: &spec,
                action,
                label: label.as_ref().unwrap_or(action),
                subtask: subtask.as_deref(),
                result: &result,
                previous: &previous,
            }) {
                stopping = true;
            }
            if result.terminated || result.truncated {
                for state in vec_env.envs[*slot].object_states() {
                    for v in state.translation.iter().chain(state.rotation.iter()) {
                        hasher.update(v.to_bits().to_le_bytes());
                    }
                }
                let outcome = EpisodeOutcome {
                    instruction: vec_env.envs[*slot].instruction().to_string(),
                    success: result.success,
                    steps: result.info.step,
                    interventions: result.info.interventions,
                    digest: hex(&hasher.finalize()),
                    progress: result.reward,
                    reversals: reversals.count,
                    held_out: vec_env.envs[*slot].held_out().map(str::to_string),
                    spec,
                };
                if !on_event(Event::Done {
                    slot: *slot,
                    outcome: &outcome,
                }) {
                    stopping = true;
                }
                outcomes.push(outcome);
            } else {
                slots[*slot] = Some((spec, hasher, result.observation, reversals));
            }
        }
    }
    outcomes.sort_by_key(|o| o.spec.index);
    Ok(outcomes)
}

#[cfg(test)]
mod wilson_tests {
    use super::{wilson_interval, EpisodeOutcome, EpisodeSpec, Reversals, Tally};
    use crate::Split;
    use vla_core::Action;

    /// An episode of `steps` steps, `reversals` of them reversing, ending at `progress`.
    fn outcome(progress: f32, steps: usize, reversals: usize) -> EpisodeOutcome {
        EpisodeOutcome {
            spec: EpisodeSpec {
                family: "sort".into(),
                split: Split::Seen,
                seed: 0,
                index: 0,
            },
            instruction: String::new(),
            success: progress == 1.0,
            steps,
            interventions: Default::default(),
            digest: String::new(),
            progress,
            reversals,
            held_out: None,
        }
    }

    #[test]
    fn pooled_tallies_are_one_tally_of_all_their_episodes() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        let episodes = [
            (1.0f32, 40, 0),
            (1.0, 50, 2),
            (0.0, 320, 200),
            (0.5, 320, 10),
        ];
        for (t, outcomes) in [(&mut a, &episodes[..3]), (&mut b, &episodes[3..])] {
            for &(p, steps, rev) in outcomes {
                t.add(&outcome(p, steps, rev));
            }
        }
        let mut all = Tally::default();
        for &(p, steps, rev) in &episodes {
            all.add(&outcome(p, steps, rev));
        }
        let pooled = Tally::pooled([&a, &b]);
        assert_eq!(
            (pooled.episodes, pooled.successes, &pooled.progress_counts),
            (all.episodes, all.successes, &all.progress_counts)
        );
        assert_eq!(pooled.wilson95, all.wilson95);
        assert!((pooled.mean_progress - all.mean_progress).abs() < 1e-12);
        assert!((pooled.success_rate - 0.5).abs() < 1e-12);
        assert_eq!((pooled.steps, pooled.reversals), (730, 212));
        assert!((pooled.reversal_share - 212.0 / 730.0).abs() < 1e-12);
        assert_eq!(pooled.reversal_share, all.reversal_share);
    }

    /// Episodes that hold something out are tallied under its kind as well; pooling two
    /// seeds' tallies pools each kind's.
    #[test]
    fn held_out_kinds_are_tallied_apart_and_pool() {
        let held = |kind: &str, success: bool| EpisodeOutcome {
            held_out: Some(kind.into()),
            ..outcome(if success { 1.0 } else { 0.0 }, 50, 0)
        };
        let mut a = Tally::default();
        for o in [
            held("color", true),
            held("color", false),
            held("phrasing", false),
        ] {
            a.add(&o);
        }
        let mut b = Tally::default();
        for o in [held("color", true), held("combo", true)] {
            b.add(&o);
        }
        let kinds = |t: &Tally| -> Vec<(String, usize, usize)> {
            t.by_held_out
                .iter()
                .map(|(k, v)| (k.clone(), v.successes, v.episodes))
                .collect()
        };
        assert_eq!(
            kinds(&a),
            [("color".into(), 1, 2), ("phrasing".into(), 0, 1)]
        );
        let pooled = Tally::pooled([&a, &b]);
        assert_eq!(
            kinds(&pooled),
            [
                ("color".into(), 2, 3),
                ("combo".into(), 1, 1),
                ("phrasing".into(), 0, 1)
            ]
        );
        assert_eq!(
            pooled.by_held_out["color"].wilson95,
            wilson_interval(2, 3, 1.959_964)
        );
        assert!(pooled
            .by_held_out
            .values()
            .all(|k| k.by_held_out.is_empty()));
        // Nothing held out: nothing tallied apart.
        let mut seen = Tally::default();
        seen.add(&outcome(1.0, 40, 0));
        assert!(seen.by_held_out.is_empty());
    }

    /// Up-down and close-open cycles count every step; a steady approach, a grasp, a lift and
    /// a release count nothing, nor do small corrections against the last move.
    #[test]
    fn two_step_cycles_count_and_a_grasp_does_not() {
        let count = |actions: &[([f32; 3], f32)]| {
            let mut r = Reversals::default();
            for &(d, g) in actions {
                r.step(&Action::new(d, [0.0; 3], g));
            }
            r.count
        };
        let (down, up) = ([0.0, 0.0, -0.025], [0.0, 0.0, 0.025]);
        let still = [0.0; 3];
        // Approach, close, lift, carry sideways with a small correction back, release.
        let grasp = [
            (down, 0.0),
            (down, 0.0),
            (still, 1.0),
            (still, 1.0),
            (up, 1.0),
            ([0.02, 0.0, 0.0], 1.0),
            ([-0.004, 0.0, 0.0], 1.0),
            (still, 0.0),
            (up, 0.0),
        ];
        assert_eq!(count(&grasp), 0);
        let bobbing: Vec<_> = (0..10)
            .map(|i| (if i % 2 == 0 { up } else { down }, 1.0))
            .collect();
        assert_eq!(count(&bobbing), 9);
        let chatter: Vec<_> = (0..10).map(|i| (still, (i % 2) as f32)).collect();
        assert_eq!(
            count(&chatter),
            8,
            "the first change is a grasp, every later one undoes it"
        );
    }

    #[test]
    fn wilson_matches_known_values() {
        // 8/10 at 95 %: [0.490, 0.943] (standard tables).
        let [lo, hi] = wilson_interval(8, 10, 1.959_964);
        assert!(
            (lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3,
            "{lo} {hi}"
        );
        let [lo, hi] = wilson_interval(0, 20, 1.959_964);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.1611).abs() < 1e-3, "{hi}");
        assert_eq!(wilson_interval(0, 0, 1.96), [0.0, 1.0]);
    }
}

#[cfg(test)]
mod shard_tests {
    use super::{episode_specs, Shard};
    use crate::Split;

    #[test]
    fn shards_partition_the_specs_in_order() {
        let all = episode_specs(&["pick", "place"], Split::Seen, 7, 3);
        for count in [1, 2, 3, 5, 14, 20] {
            let joined: Vec<_> = (0..count)
                .flat_map(|index| Shard { index, count }.select(all.clone()))
                .collect();
            assert_eq!(joined, all, "{count} shards");
        }
        let sizes: Vec<usize> = (0..3)
            .map(|index| Shard { index, count: 3 }.select(all.clone()).len())
            .collect();
        assert_eq!(sizes, [4, 5, 5]);
    }

    #[test]
    fn shard_parses_and_rejects_naming_the_fault() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(Shard { index: 1, count: 4 }.tag(), "shard-001-of-004");
        for (bad, says) in [
            ("4/4", "below the shard count"),
            ("1/0", "below the shard count"),
            ("2", "form i/N"),
            ("a/3", "index \"a\""),
        ] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
