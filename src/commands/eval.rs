//! `vla eval`: closed-loop success of a trained policy on the task suite, in the same JSON
//! shape as `vla expert` (with 95 % Wilson intervals), plus GIFs of the first successes and
//! failures per family under `RUN/eval/`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vla_core::{Action, Observation};
use vla_model::policy::HeadPoints;
use vla_model::Policy;
use vla_sim::record::GifRecorder;
use vla_sim::Env;
use vla_tasks::runner::{
    episode_specs, run as run_episodes, Agent, EpisodeOutcome, Event, RunSetup, Shard, SuiteReport,
};
use vla_tasks::TaskError;

use super::train::parse_device;
use super::{EpisodeOptions, SimOptions};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Run directory written by `vla train`.
    #[arg(long)]
    pub ckpt: PathBuf,
    #[command(flatten)]
    pub run: EpisodeOptions,
    /// GIFs of the first successes and of the first failures to keep per family.
    #[arg(long, default_value_t = 2)]
    pub gifs: usize,
    /// Where GIFs and the report go (default: RUN/eval).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write one JSON line per control step: the policy's action, what the scripted expert
    /// would have done in the same state, the end-effector state, where the grounding heads
    /// put the named object and bin (`heads_xy`), which of them the subgoal gate picks
    /// (`subgoal`) and with what probabilities (`subgoal_probs`), and where they are
    /// (`object_xyz`, `bin_xy`; every object in `objects_xyz`). Shows *where* a policy
    /// departs from the demonstrations, and whether it looked in the right place.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Run only this part of the episodes: `i/N` (the i-th of N contiguous blocks of the
    /// episode specs) or `env` under a launcher (its rank and world size). The shard's
    /// outcomes go to `OUT/{suite}_{split}.shard-iii-of-NNN.json`; `--merge-shards` then
    /// joins them into the report (and digest) an unsharded run writes. Under a launcher
    /// (`torchrun --nproc-per-node N --no-python vla eval … --shard env`) the ranks meet when
    /// done and rank 0 merges and prints the whole report itself (OUT on a shared filesystem).
    #[arg(long, value_name = "i/N|env", conflicts_with = "merge_shards")]
    pub shard: Option<super::ShardArg>,
    /// Run nothing: join the shard files of this same command line (same `--suite`,
    /// `--split`, `--episodes`, `--seed`, `--vocabulary`) found in OUT into
    /// `OUT/{suite}_{split}.json`, and print that report.
    #[arg(long)]
    pub merge_shards: bool,
    /// With `--shard env` under a launcher: seconds the ranks wait for each other at the end
    /// (the slowest shard's lead), after which a missing rank is an error.
    #[arg(long, default_value_t = 3600)]
    pub dist_timeout: u64,
    /// Decoding temperature of the action tokens: 0 is greedy; above 0 each token is sampled
    /// (libtorch's generator seeded from `--seed`, so a run repeats).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch intra-op threads.
    #[arg(long)]
    pub threads: Option<i32>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sim: SimOptions,
}

/// The trained policy as an episode-runner agent: one batched forward pass for every
/// environment that needs an action this step.
///
/// It can also ask each environment's scripted expert what it would do in the same state
/// (the runner reports that as the step's label), and hand a share of the steps to the
/// expert: that is DAgger's data collection (Ross et al., 2011), where the policy visits
/// its own mistakes and the expert labels how to recover from them.
pub struct PolicyAgent<'a> {
    pub policy: &'a Policy,
    /// Query the expert every step (its clean action becomes the step's label).
    pub query_expert: bool,
    /// Probability that a step executes the expert's action instead of the policy's
    /// (DAgger's β); needs `query_expert`.
    pub expert_share: f64,
    pub rng: ChaCha8Rng,
    /// Per environment, what `--trace` adds to a step: filled by [`Agent::act`] (which
    /// sees the scene), read by the event handler that writes the step.
    pub diagnostics: Option<&'a RefCell<Vec<Option<StepDiagnostics>>>>,
}

/// For `vla eval --trace`: where the grounding heads put the named object and bin on the
/// table, beside where the target object (index 0) and bin (index 0) really are, and every
/// object in scene order (in `stack` the base is object 1).
#[derive(Clone, Debug)]
pub struct StepDiagnostics {
    /// Where the heads look and what the gate chose; `None` for a model without heads.
    pub points: Option<HeadPoints>,
    /// The sub-task the policy said before acting (`None` for a model without a plan).
    pub subtask: Option<String>,
    pub bin_xy: Option<[f32; 2]>,
    /// Every object's position, in scene order (the target first).
    pub objects_xyz: Vec<[f32; 3]>,
}

impl StepDiagnostics {
    fn of(points: Option<HeadPoints>, subtask: Option<String>, env: &Env) -> Self {
        let cell = env.cell();
        let objects_xyz = cell.map_or_else(Vec::new, |c| {
            c.object_states()
                .into_iter()
                .map(|o| o.translation)
                .collect()
        });
        let bin_xy = cell.and_then(|c| c.receptacles.first()).map(|r| r.position);
        StepDiagnostics {
            points,
            subtask,
            bin_xy,
            objects_xyz,
        }
    }
}

impl<'a> PolicyAgent<'a> {
    /// Only the policy acts; the expert is not consulted.
    pub fn new(policy: &'a Policy) -> Self {
        PolicyAgent {
            policy,
            query_expert: false,
            expert_share: 0.0,
            rng: ChaCha8Rng::seed_from_u64(0),
            diagnostics: None,
        }
    }
}

impl Agent for PolicyAgent<'_> {
    /// A chunked policy must not carry the last episode's chunk into this one.
    fn begin(&mut self, slot: usize, _instruction: &str) {
        self.policy.reset_stream(slot);
    }

    fn act(
        &mut self,
        envs: &mut [Env],
        active: &[usize],
        observations: &[&Observation],
    ) -> Result<Vec<Action>, TaskError> {
        let expert: Vec<Action> = if self.query_expert {
            active
                .iter()
                .map(|i| envs[*i].expert_action().map_err(TaskError::from))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let items: Vec<(&Observation, &str)> = observations
            .iter()
            .map(|o| (*o, o.instruction.as_str()))
            .collect();
        let policy_error = |e| TaskError::Agent(format!("policy: {e}"));
        // Each environment slot is one stream of the policy (its chunk queue, if any).
        let decided = self.policy.step(active, &items).map_err(policy_error)?;
        let mut actions = Vec::with_capacity(active.len());
        let mut cells = self.diagnostics.map(RefCell::borrow_mut);
        for (&i, d) in active.iter().zip(decided) {
            if let Some(cells) = cells.as_mut() {
                if cells.len() <= i {
                    cells.resize(i + 1, None);
                }
                cells[i] = Some(StepDiagnostics::of(d.points, d.subtask, &envs[i]));
            }
            actions.push(d.action);
        }
        if self.expert_share > 0.0 {
            for (action, expert) in actions.iter_mut().zip(&expert) {
                if self.rng.random::<f64>() < self.expert_share {
                    *action = *expert;
                }
            }
        }
        Ok(actions)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // `--shard env` under a launcher: every rank runs its shard, they meet at a barrier of
    // c10d's Gloo group (the launcher's rendezvous), and rank 0 merges and reports.
    let launched = match args.shard {
        Some(super::ShardArg::Env) => {
            vla_dist::Rendezvous::from_env()?.filter(|rv| rv.world_size > 1)
        }
        _ => None,
    };
    let Some(rv) = launched else {
        let report = evaluate(&args)?;
        return super::print_report(args.json, &report, || super::expert::human(&report));
    };
    let timeout = std::time::Duration::from_secs(args.dist_timeout);
    let group = vla_dist::ProcessGroup::new(&rv, vla_dist::Backend::Gloo, timeout)?;
    let mine = evaluate(&args);
    // The barrier: every rank arrives, failed or not (so none waits out the timeout), and
    // learns how many failed.
    let mut failed = [f64::from(u8::from(mine.is_err()))];
    group.all_reduce_f64(&mut failed)?;
    mine?;
    anyhow::ensure!(failed[0] == 0.0, "{} other shard(s) failed", failed[0]);
    if rv.rank != 0 {
        return Ok(());
    }
    let merged = evaluate(&Args {
        merge_shards: true,
        shard: None,
        ..args.clone()
    })?;
    super::print_report(args.json, &merged, || super::expert::human(&merged))
}

/// Runs the evaluation and writes `OUT/{suite}_{split}.json` (`…_{vocabulary}.json` with
/// `--vocabulary`) and the GIFs.
pub fn evaluate(args: &Args) -> anyhow::Result<SuiteReport> {
    let (families, split) = args.run.validate()?;
    let out_dir = args.out.clone().unwrap_or_else(|| args.ckpt.join("eval"));
    // Another vocabulary's results sit beside the built-in one's, not over them.
    let words = match &args.run.language.vocabulary {
        Some(v) => format!("_{}", v.file_stem().unwrap_or_default().to_string_lossy()),
        None => String::new(),
    };
    let stem = format!("{}_{}{words}", args.run.suite, split.as_str());
    let total_specs = episode_specs(&families, split, args.run.episodes, args.run.seed).len();
    if args.merge_shards {
        return merge_shards(args, split, &out_dir, &stem, total_specs);
    }
    let shard = args.shard.map(super::ShardArg::resolve).transpose()?;
    let lang = args.run.language.language()?;
    super::train::set_threads(args.threads)?;
    let policy = Policy::load(&args.ckpt, parse_device(&args.device)?)
        .with_context(|| format!("loading the policy from {}", args.ckpt.display()))?
        .with_temperature(args.temperature, args.run.seed)
        .context("--temperature")?;
    super::require_simulator_layout(&policy, "vla eval")?;
    let gif_dir = out_dir.join(format!("{}{words}", split.as_str()));
    std::fs::create_dir_all(&gif_dir)
        .with_context(|| format!("cannot create {}", gif_dir.display()))?;
    let mut config = args.sim.env_config()?;
    config.render_enabled = true;
    let robot = args.sim.robot()?;
    let mut specs = episode_specs(&families, split, args.run.episodes, args.run.seed);
    if let Some(s) = shard {
        specs = s.select(specs);
    }
    let mut bar = super::SuccessBar::new(specs.len() as u64, &format!("eval {}", split.as_str()));
    let slots = args.run.envs.max(1);
    let mut recorders: Vec<Option<GifRecorder>> = (0..slots).map(|_| None).collect();
    // (successes saved, failures saved) per family.
    let mut saved: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut trace = match &args.trace {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create the trace {}", path.display()))?,
        )),
        None => None,
    };
    let diagnostics = RefCell::new(Vec::new());
    let wanted = args.gifs;
    let mut io_error: Option<anyhow::Error> = None;
    let outcomes = run_episodes(
        &specs,
        &RunSetup {
            envs: slots,
            config: &config,
            robot: &robot,
            language: &lang,
            noise: vla_tasks::ExpertNoise::NONE,
        },
        &mut PolicyAgent {
            query_expert: trace.is_some(),
            diagnostics: trace.is_some().then_some(&diagnostics),
            ..PolicyAgent::new(&policy)
        },
        &mut |event| {
            match event {
                Event::Reset {
                    slot,
                    spec,
                    observation,
                    ..
                } => {
                    let (s, f) = saved.get(&spec.family).copied().unwrap_or((0, 0));
                    recorders[slot] = (s < wanted || f < wanted).then(|| {
                        let mut r = GifRecorder::new();
                        r.push(observation);
                        r
                    });
                }
                Event::Step {
                    slot,
                    spec,
                    action,
                    label,
                    subtask,
                    result,
                    previous,
                } => {
                    if let Some(r) = recorders[slot].as_mut() {
                        r.push(&result.observation);
                    }
                    if let Some(w) = trace.as_mut() {
                        let diag = diagnostics.borrow().get(slot).cloned().flatten();
                        let points = diag.as_ref().and_then(|d| d.points.as_ref());
                        let line = serde_json::json!({
                            "family": spec.family,
                            "index": spec.index,
                            "step": result.info.step,
                            "state": previous.state,
                            "action": action.0,
                            "expert": label.0,
                            // What the policy said it would do next, and the expert's step.
                            "subtask": diag.as_ref().and_then(|d| d.subtask.as_deref()),
                            "expert_subtask": subtask,
                            "success": result.success,
                            "heads_xy": points.map(|p| &p.heads),
                            "subgoal": points.and_then(HeadPoints::subgoal),
                            // Empty (not null) without heads, like a model without a gate.
                            "subgoal_probs": diag.as_ref().map(|d| {
                                d.points.as_ref().map_or(&[][..], |p| &p.subgoal_probs[..])
                            }),
                            "object_xyz": diag.as_ref().and_then(|d| d.objects_xyz.first()),
                            "bin_xy": diag.as_ref().and_then(|d| d.bin_xy),
                            "objects_xyz": diag.as_ref().map(|d| &d.objects_xyz),
                        });
                        if let Err(e) = writeln!(w, "{line}") {
                            io_error.get_or_insert(e.into());
                        }
                    }
                }
                Event::Done { slot, outcome } => {
                    bar.finished(outcome.success);
                    if let Some(r) = recorders[slot].take() {
                        let count = saved.entry(outcome.spec.family.clone()).or_default();
                        let (n, tag) = if outcome.success {
                            (&mut count.0, "success")
                        } else {
                            (&mut count.1, "failure")
                        };
                        if *n < wanted {
                            *n += 1;
                            let path = gif_dir.join(format!(
                                "{}_{tag}_{:03}.gif",
                                outcome.spec.family, outcome.spec.index
                            ));
                            match r.save(&path, 10.0) {
                                Ok(()) => tracing::info!("recorded {}", path.display()),
                                Err(e) => io_error = Some(e.into()),
                            }
                        }
                    }
                }
            }
            true
        },
    )?;
    bar.bar.finish_and_clear();
    if let Some(w) = trace.as_mut() {
        if let Err(e) = w.flush() {
            io_error.get_or_insert(e.into());
        }
    }
    if let Some(e) = io_error {
        return Err(e);
    }
    let report = SuiteReport::from_outcomes(&args.run.suite, split, &outcomes);
    let (path, text) = match shard {
        Some(shard) => (
            out_dir.join(format!("{stem}.{}.json", shard.tag())),
            serde_json::to_string_pretty(&ShardResults {
                request: Request::of(args),
                shard,
                total_specs,
                outcomes,
            })?,
        ),
        None => (
            out_dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(&report)?,
        ),
    };
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(report)
}

/// What a sharded evaluation ran, so that only shards of one request are merged.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Request {
    suite: String,
    split: String,
    episodes: usize,
    seed: u64,
    vocabulary: Option<PathBuf>,
    splits: Option<PathBuf>,
}

impl Request {
    fn of(args: &Args) -> Self {
        Request {
            suite: args.run.suite.clone(),
            split: args.run.split.clone(),
            episodes: args.run.episodes,
            seed: args.run.seed,
            vocabulary: args.run.language.vocabulary.clone(),
            splits: args.run.language.splits.clone(),
        }
    }
}

/// One shard's file: every episode's outcome (the report is computed when merging).
#[derive(Serialize, Deserialize)]
struct ShardResults {
    request: Request,
    shard: Shard,
    /// Episodes of the whole (unsharded) run.
    total_specs: usize,
    outcomes: Vec<EpisodeOutcome>,
}

/// `--merge-shards`: every shard of this request present once, every episode once; the report
/// is [`SuiteReport::from_outcomes`] over all of them, as an unsharded run computes it.
fn merge_shards(
    args: &Args,
    split: vla_tasks::Split,
    out_dir: &Path,
    stem: &str,
    total_specs: usize,
) -> anyhow::Result<SuiteReport> {
    let prefix = format!("{stem}.shard-");
    let mut files: Vec<PathBuf> = std::fs::read_dir(out_dir)
        .with_context(|| format!("--merge-shards: cannot read {}", out_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "--merge-shards: no {prefix}*.json in {} (run `vla eval … --shard i/N` first)",
        out_dir.display()
    );
    let want = Request::of(args);
    let mut count = None;
    let mut seen_shards = std::collections::BTreeSet::new();
    let mut outcomes: Vec<EpisodeOutcome> = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let part: ShardResults = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a shard file of vla eval", file.display()))?;
        anyhow::ensure!(
            part.request == want && part.total_specs == total_specs,
            "{}: the shard ran {:?} ({} episodes in all), not this command's {:?} ({total_specs})",
            file.display(),
            part.request,
            part.total_specs,
            want
        );
        let n = *count.get_or_insert(part.shard.count);
        anyhow::ensure!(
            part.shard.count == n,
            "{}: shard {} of another split into shards ({} here, {n} in the first file)",
            file.display(),
            part.shard,
            part.shard.count
        );
        seen_shards.insert(part.shard.index);
        outcomes.extend(part.outcomes);
    }
    let n = count.unwrap_or(0);
    let missing: Vec<String> = (0..n)
        .filter(|i| !seen_shards.contains(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "--merge-shards: shard(s) {} missing in {}",
        missing.join(", "),
        out_dir.display()
    );
    let mut indices: Vec<usize> = outcomes.iter().map(|o| o.spec.index).collect();
    indices.sort_unstable();
    anyhow::ensure!(
        indices == (0..total_specs).collect::<Vec<_>>(),
        "--merge-shards: the shards hold episodes {indices:?}, not each of 0..{total_specs} once"
    );
    let report = SuiteReport::from_outcomes(&args.run.suite, split, &outcomes);
    let path = out_dir.join(format!("{stem}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(report)
}
