//! `vla demo`: the main job on a fresh machine. Collect expert demonstrations, train the
//! tiny VLA, let it drive while the expert labels what it reaches (DAgger) and fine-tune on
//! that, evaluate it in closed loop on the seen and unseen splits, and write
//! `runs/demo/report.md` with the success table, the loss curve and rollout GIFs.
//!
//! Every stage is cached: a second run reuses finished datasets, a finished (or resumes an
//! unfinished) training run and finished evaluations, unless `--fresh`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use vla_tasks::runner::{SuiteReport, Tally};

use super::{EpisodeOptions, SimOptions};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Start over: delete OUT first.
    #[arg(long)]
    fresh: bool,
    /// Training demonstrations per family, as `family=episodes,…`. `stack` and `sort` are
    /// evaluated but not trained on by default: their long episodes took 40 % of the frames,
    /// and `pick`/`place`, which they are made of, learned less for it (0/50 `pick` with
    /// them, 3/20 and 4/20 without, in runs of 2,000 and 6,000 steps). Session 13, with the
    /// policy naming its step in words: `pick=120,place=80,stack=80,sort=50` with DAgger
    /// `pick=80;pick=60` of 600 steps gave `pick` 1/50 (mixed DAgger rollouts 60 % then
    /// 15 %; the grasp point's validation error 9.1 cm against 1.8 cm on `pick`/`place`).
    #[arg(long, default_value = "pick=150,place=100")]
    demos: String,
    /// Expert action noise while collecting (m per step): recovery data for the closed loop.
    #[arg(long, default_value_t = 0.004)]
    noise: f32,
    /// Speed (m per step) of the expert's occasional pushes off its path while collecting
    /// (see `vla collect --push`): centimetre-scale recoveries in the data.
    #[arg(long, default_value_t = 0.0)]
    push: f32,
    /// Model + training config.
    #[arg(long, default_value = "vla/configs/tiny.toml")]
    config: PathBuf,
    /// Override the config's training steps.
    #[arg(long)]
    steps: Option<usize>,
    /// DAgger (Ross et al. 2011) after the first training, one round per `;`-separated group
    /// of `family=episodes,…` (empty for none): the latest policy drives those episodes while
    /// the expert labels every state it reaches, then the model is fine-tuned on the
    /// demonstrations and all DAgger data so far. Cloning alone never shows the states the
    /// policy's own mistakes lead to. `family=episodes@β` gives that family its own expert
    /// share instead of `--expert-share`: a long task needs a larger one for its rollouts to
    /// reach the later phases (session 23's `stack` rounds: `stack=60@0.6`).
    /// Measured: `pick` 3/50 after cloning, 28/50 after one round of 100 `pick` episodes,
    /// 36/50 after a second (with 40 `place` episodes, which left `place` at 2/40). With the
    /// fine grounding maps, a second round of 100 `place` episodes instead of `pick` gave
    /// `pick` 24/50 against 34/50 and left `place` at 0/40 (its mixed rollouts: 60 %).
    /// With the experts' labels fixed after a learner's drop (session 10): a third round of
    /// 100 `place` episodes (mixed rollouts 60 %) gave `pick` 41/50, `place` 0/40; two
    /// rounds of `pick=60,place=60` gave `pick` 7/50, `place` 1/40. With the subgoal gate and
    /// the drop funnel (session 11): this default `pick` 47/50, `place` 1/40; a third round
    /// of `place=100` `pick` 39/50, `place` 3/40 (23.6 min). With the grounding heads
    /// reading phrases (session 12) this default: `pick` 46/50, `place` 33/40 (16.3 min).
    #[arg(long, default_value = "pick=100;pick=100")]
    dagger: String,
    /// Share of DAgger steps where the expert's action runs instead of the policy's (β), so
    /// that the later phases of a task are reached too.
    #[arg(long, default_value_t = 0.3)]
    expert_share: f64,
    /// Fine-tuning steps per DAgger round (the demo's 30-minute budget sets it).
    #[arg(long, default_value_t = 800)]
    dagger_steps: usize,
    /// Peak learning rate of the DAgger fine-tuning (default: the config's `train.optim.lr`).
    /// Measured: 5e-4 instead of the tiny config's 2e-3 gave 2/50 `pick` against 20/50.
    /// Cached rounds are reused whatever rate trained them: change it with `--fresh`.
    #[arg(long)]
    dagger_lr: Option<f64>,
    /// Evaluation episodes per family on the seen split, as `family=episodes,…`. `stack` and
    /// `sort` get few: untrained, they fail, and a failed `sort` episode runs its 320 steps.
    #[arg(long, default_value = "pick=50,place=40,stack=5,sort=5")]
    eval_seen: String,
    /// Evaluation episodes per family on the unseen split.
    #[arg(long, default_value = "pick=10,place=10,stack=3,sort=3")]
    eval_unseen: String,
    /// The seen split again on other scenes (seed 2000), as `family=episodes,…`; "" skips it.
    /// One seed's scenes are one draw (session 15's `place` read 82 % on one and 68 % on
    /// another), so the report gives both seeds and their pool. `stack` and `sort` join it
    /// once they are learned: failing, they run their full length (~8 s an episode here).
    #[arg(long, default_value = "pick=40,place=40")]
    eval_seen_2: String,
    /// The unseen split again on seed 2000's scenes, as `family=episodes,…`; "" (the
    /// default) skips it. What co-training is for shows on the unseen split, so its
    /// measurement (`--ablation cotrain`) wants two seeds there too.
    #[arg(long, default_value = "")]
    eval_unseen_2: String,
    /// Parallel environments for collection and evaluation.
    #[arg(long, default_value_t = 2)]
    envs: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Co-train (RT-2) on this many vision-language scenes (`vla vqa collect`, seed
    /// `VQA_SEED`), whose questions name every colour and object, held-out ones included;
    /// 0: robot data only, the default: with 1,000 scenes the demo takes about 37 minutes on
    /// 2 cores, over its 30 (session 26: unseen `pick` 59 %, `place` 35 %, seen `place` 82 %,
    /// seeds 1000 and 2000 pooled, one training run; session 15's run had lost 20 points of
    /// seen `place`).
    #[arg(long, default_value_t = 0)]
    vqa_scenes: usize,
    /// The vision-language share of each training batch (see `vla train --vqa-ratio`).
    #[arg(long, default_value_t = 0.2)]
    vqa_ratio: f64,
    /// Run an ablation instead of the demo: `cotrain` trains the same robot data with the
    /// same schedule twice, without and with co-training on `--vqa-scenes` scenes (1,000
    /// when 0), and writes `OUT/ablation.md` with both policies' seen and unseen success
    /// and the co-trained one's question-answering accuracy. Takes about twice the demo.
    #[arg(long, value_enum)]
    ablation: Option<Ablation>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sim: SimOptions,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Ablation {
    Cotrain,
}

/// Seeds of training demonstrations and of evaluation episodes are disjoint streams.
const COLLECT_SEED: u64 = 0;
const EVAL_SEED: u64 = 1_000;
/// The second seen evaluation's scenes (`--eval-seen-2`), disjoint from both.
const EVAL_SEED_2: u64 = 2_000;
/// Round `r` of DAgger uses seed `DAGGER_SEED + r` (the demo's DAgger data is its own).
const DAGGER_SEED: u64 = 7_000;
/// Vision-language scenes for co-training: their own stream too.
const VQA_SEED: u64 = 9_000;

/// One family's share of a DAgger round: its episodes, and the share of their steps the
/// expert drives (β).
#[derive(Debug, Clone, PartialEq)]
struct DaggerSpec {
    family: String,
    episodes: usize,
    expert_share: f64,
}

/// A round of `--dagger`: `family=episodes[@β],…`, β defaulting to `--expert-share`.
fn parse_round(text: &str, default_share: f64) -> anyhow::Result<Vec<DaggerSpec>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (count, share) = match item.split_once('@') {
                Some((count, share)) => {
                    let share: f64 = share.trim().parse().with_context(|| {
                        format!("--dagger: {item:?}: {share:?} is not an expert share")
                    })?;
                    anyhow::ensure!(
                        (0.0..=1.0).contains(&share),
                        "--dagger: {item:?}: the expert share must be in [0, 1]"
                    );
                    (count, share)
                }
                None => (item, default_share),
            };
            let (family, episodes) = parse_count("--dagger", count)?;
            Ok(DaggerSpec {
                family,
                episodes,
                expert_share: share,
            })
        })
        .collect()
}

fn parse_counts(flag: &str, text: &str) -> anyhow::Result<Vec<(String, usize)>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| parse_count(flag, item))
        .collect()
}

/// One `family=episodes` item of a `flag`'s list.
fn parse_count(flag: &str, item: &str) -> anyhow::Result<(String, usize)> {
    let (family, n) = item
        .split_once('=')
        .with_context(|| format!("{flag}: {item:?} is not family=episodes"))?;
    let family = family.trim();
    vla_tasks::parse_suite(family).with_context(|| format!("{flag}: {item:?}"))?;
    anyhow::ensure!(family != "all", "{flag}: name families one by one");
    let n: usize = n
        .trim()
        .parse()
        .with_context(|| format!("{flag}: {n:?} is not a number of episodes"))?;
    Ok((family.to_string(), n))
}

#[derive(Serialize, serde::Deserialize, Clone, Copy, Default)]
struct StageTimes {
    collect_s: f64,
    train_s: f64,
    /// DAgger: policy rollouts and fine-tuning.
    #[serde(default)]
    dagger_s: f64,
    eval_s: f64,
    total_s: f64,
    /// Some stage was reused from the cache (its time is the one recorded when it ran).
    #[serde(default)]
    reused: bool,
}

impl StageTimes {
    /// A reused stage takes milliseconds; anything longer did real work.
    const WORK_S: f64 = 2.0;

    /// Times of the stages that did work now, and for reused stages the time they took when
    /// they ran (kept in `OUT/stage_times.json`), so a cached rerun still reports what a
    /// fresh run costs.
    fn merge_with_recorded(self, out: &Path) -> anyhow::Result<StageTimes> {
        let path = out.join("stage_times.json");
        let recorded: StageTimes = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let pick = |now: f64, before: f64| {
            if now >= Self::WORK_S || before == 0.0 {
                (now, false)
            } else {
                (before, true)
            }
        };
        let (collect_s, c) = pick(self.collect_s, recorded.collect_s);
        let (train_s, t) = pick(self.train_s, recorded.train_s);
        let (dagger_s, d) = pick(self.dagger_s, recorded.dagger_s);
        let (eval_s, e) = pick(self.eval_s, recorded.eval_s);
        let overhead =
            (self.total_s - self.collect_s - self.train_s - self.dagger_s - self.eval_s).max(0.0);
        let merged = StageTimes {
            collect_s,
            train_s,
            dagger_s,
            eval_s,
            total_s: collect_s + train_s + dagger_s + eval_s + overhead,
            reused: c || t || d || e,
        };
        std::fs::write(&path, serde_json::to_string_pretty(&merged)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(merged)
    }
}

#[derive(Serialize)]
struct DemoReport {
    report: PathBuf,
    run: PathBuf,
    seen: Vec<SuiteReport>,
    /// The seen split on the second seed's scenes (`--eval-seen-2`).
    seen_seed_2: Vec<SuiteReport>,
    unseen: Vec<SuiteReport>,
    /// The unseen split on the second seed's scenes (`--eval-unseen-2`).
    unseen_seed_2: Vec<SuiteReport>,
    train: serde_json::Value,
    dagger: Vec<DaggerRound>,
    /// The vision-language data the runs co-trained on, if any.
    cotrain: Option<PathBuf>,
    seconds: StageTimes,
}

impl DemoReport {
    fn splits(&self) -> Splits<'_> {
        Splits {
            seen: [&self.seen, &self.seen_seed_2],
            unseen: [&self.unseen, &self.unseen_seed_2],
        }
    }
}

/// Each split's reports on the first and the second seed's scenes (empty: not evaluated).
struct Splits<'a> {
    seen: [&'a [SuiteReport]; 2],
    unseen: [&'a [SuiteReport]; 2],
}

impl<'a> Splits<'a> {
    fn by_name(&self) -> [(&'static str, [&'a [SuiteReport]; 2]); 2] {
        [("seen", self.seen), ("unseen", self.unseen)]
    }
}

/// One DAgger round: what the policy-driven collection reached, and the fine-tuned run.
#[derive(Serialize)]
struct DaggerRound {
    round: usize,
    /// Per family: episodes, frames, success of the mixed policy/expert rollouts.
    collected: Vec<serde_json::Value>,
    run: PathBuf,
    train: serde_json::Value,
}

/// What the demo runs: demonstrations, DAgger rounds and evaluations per family.
struct Plan {
    demos: Vec<(String, usize)>,
    dagger: Vec<Vec<DaggerSpec>>,
    eval_seen: Vec<(String, usize)>,
    eval_seen_2: Vec<(String, usize)>,
    eval_unseen: Vec<(String, usize)>,
    eval_unseen_2: Vec<(String, usize)>,
}

/// A pipeline's vision-language data: where it is, and whether its runs co-train on it or
/// only train their tokenizer on its words (the ablation's robot-only arm, so both arms
/// share one tokenizer).
struct VqaUse {
    dir: PathBuf,
    scenes: usize,
    cotrain: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.expert_share),
        "--expert-share {} must be in [0, 1]",
        args.expert_share
    );
    let plan = Plan {
        demos: parse_counts("--demos", &args.demos)?,
        dagger: args
            .dagger
            .split(';')
            .filter(|round| !round.trim().is_empty())
            .map(|round| parse_round(round, args.expert_share))
            .collect::<anyhow::Result<Vec<_>>>()?,
        eval_seen: parse_counts("--eval-seen", &args.eval_seen)?,
        eval_seen_2: parse_counts("--eval-seen-2", &args.eval_seen_2)?,
        eval_unseen: parse_counts("--eval-unseen", &args.eval_unseen)?,
        eval_unseen_2: parse_counts("--eval-unseen-2", &args.eval_unseen_2)?,
    };
    anyhow::ensure!(
        args.vqa_ratio > 0.0 && args.vqa_ratio < 0.95,
        "--vqa-ratio {} must be in (0, 0.95)",
        args.vqa_ratio
    );
    if args.fresh && args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("--fresh: cannot remove {}", args.out.display()))?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    if args.ablation == Some(Ablation::Cotrain) {
        return ablation(&args, &plan);
    }
    let vqa = (args.vqa_scenes > 0).then(|| VqaUse {
        dir: args.out.join("data").join("vqa"),
        scenes: args.vqa_scenes,
        cotrain: true,
    });
    let report = pipeline(&args, &plan, &args.out, vqa.as_ref(), started)?;
    super::print_report(args.json, &report, || {
        format!(
            "{}\nreport: {}",
            success_table(&report.splits()),
            report.report.display()
        )
    })
}

/// Demonstrations (shared under `args.out/data`), training, DAgger and evaluation, with
/// the runs, DAgger data and `report.md` in `out`.
fn pipeline(
    args: &Args,
    plan: &Plan,
    out: &Path,
    vqa: Option<&VqaUse>,
    started: Instant,
) -> anyhow::Result<DemoReport> {
    let Plan {
        demos,
        dagger,
        eval_seen,
        eval_seen_2,
        eval_unseen,
        eval_unseen_2,
    } = plan;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    // 1. Demonstrations (and vision-language scenes).
    let t = Instant::now();
    let mut data_dirs = Vec::new();
    for (family, episodes) in demos {
        let dir = args.out.join("data").join(family);
        collect_cached(args, family, *episodes, &dir, COLLECT_SEED, None, 0.0)?;
        data_dirs.push(dir);
    }
    if let Some(v) = vqa {
        vqa_cached(args, &v.dir, v.scenes)?;
    }
    let collect_s = t.elapsed().as_secs_f64();

    // 2. Training.
    let t = Instant::now();
    let run_dir = out.join("run");
    let train_summary = train_cached(training(
        args, &data_dirs, &run_dir, args.steps, None, None, vqa,
    ))?;
    let train_s = t.elapsed().as_secs_f64();

    // 3. DAgger: the policy drives, the expert labels, fine-tune on everything so far.
    let t = Instant::now();
    let mut rounds = Vec::new();
    let mut run_dir = run_dir;
    for (round, families) in (1..).zip(dagger) {
        let mut collected = Vec::new();
        for DaggerSpec {
            family,
            episodes,
            expert_share,
        } in families
        {
            let dir = out.join(format!("dagger{round}")).join(family);
            let report = collect_cached(
                args,
                family,
                *episodes,
                &dir,
                DAGGER_SEED + round as u64,
                Some(&run_dir),
                *expert_share,
            )?;
            // What the rollouts reached, kept beside the data for cached reruns.
            let summary_path = out
                .join(format!("dagger{round}"))
                .join(format!("{family}.json"));
            let summary = match report {
                Some(r) => {
                    let v = serde_json::json!({
                        "family": family,
                        "expert_share": expert_share,
                        "episodes": r.total_episodes,
                        "frames": r.total_frames,
                        "success_rate": r.expert_success_rate,
                    });
                    std::fs::write(&summary_path, v.to_string())
                        .with_context(|| format!("cannot write {}", summary_path.display()))?;
                    v
                }
                None => std::fs::read_to_string(&summary_path)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_else(
                        || serde_json::json!({ "family": family, "expert_share": expert_share }),
                    ),
            };
            collected.push(summary);
            data_dirs.push(dir);
        }
        let next = out.join(format!("run_dagger{round}"));
        // A fine-tuned run older than its data (recollected from a retrained policy) is stale.
        let weights = next.join(vla_model::checkpoint::WEIGHTS_FILE);
        if data_dirs
            .iter()
            .any(|d| newer(&d.join(COLLECT_MARKER), &weights))
            && next.exists()
        {
            std::fs::remove_dir_all(&next)
                .with_context(|| format!("cannot clear the stale run {}", next.display()))?;
        }
        let train = train_cached(training(
            args,
            &data_dirs,
            &next,
            Some(args.dagger_steps),
            args.dagger_lr,
            Some(&run_dir),
            vqa,
        ))?;
        rounds.push(DaggerRound {
            round,
            collected,
            run: next.clone(),
            train,
        });
        run_dir = next;
    }
    let dagger_s = t.elapsed().as_secs_f64();
    link_final_policy(out, &run_dir)?;

    // 4. Closed-loop evaluation of the final policy.
    let t = Instant::now();
    let mut seen = Vec::new();
    let mut seen_seed_2 = Vec::new();
    let mut unseen = Vec::new();
    let mut unseen_seed_2 = Vec::new();
    for (split, seed, counts, reports) in [
        ("seen", EVAL_SEED, eval_seen, &mut seen),
        ("unseen", EVAL_SEED, eval_unseen, &mut unseen),
        ("seen", EVAL_SEED_2, eval_seen_2, &mut seen_seed_2),
        ("unseen", EVAL_SEED_2, eval_unseen_2, &mut unseen_seed_2),
    ] {
        for (family, episodes) in counts.iter() {
            reports.push(eval_cached(args, &run_dir, family, split, *episodes, seed)?);
        }
    }
    let eval_s = t.elapsed().as_secs_f64();
    let times = StageTimes {
        collect_s,
        train_s,
        dagger_s,
        eval_s,
        total_s: started.elapsed().as_secs_f64(),
        reused: false,
    }
    .merge_with_recorded(out)?;

    let path = out.join("report.md");
    let report = DemoReport {
        report: path.clone(),
        run: run_dir,
        seen,
        seen_seed_2,
        unseen,
        unseen_seed_2,
        train: train_summary,
        dagger: rounds,
        cotrain: vqa.filter(|v| v.cotrain).map(|v| v.dir.clone()),
        seconds: times,
    };
    let md = report_markdown(args, out, &report, demos);
    std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(report)
}

/// `--ablation cotrain`: the pipeline twice on the same demonstrations with the same
/// DAgger sizes, schedule and tokenizer, without and with co-training, and a table of both.
fn ablation(args: &Args, plan: &Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    let scenes = if args.vqa_scenes == 0 {
        1000
    } else {
        args.vqa_scenes
    };
    let mut arms = Vec::new();
    for (name, cotrain) in [("robot_only", false), ("cotrain", true)] {
        let vqa = VqaUse {
            dir: args.out.join("data").join("vqa"),
            scenes,
            cotrain,
        };
        tracing::info!("ablation arm {name}");
        let report = pipeline(args, plan, &args.out.join(name), Some(&vqa), Instant::now())?;
        arms.push((name, report));
    }
    // The final run's validation: question-answering accuracy on held-out scenes.
    let vqa_accuracy = |r: &DemoReport, key: &str| {
        let train = r.dagger.last().map_or(&r.train, |d| &d.train);
        train["final_val"][key]
            .as_f64()
            .map_or("–".to_string(), |a| format!("{:.0} %", 100.0 * a))
    };
    let mut md = String::from("# Co-training ablation (RT-2)\n\n");
    let _ = writeln!(
        md,
        "The same demonstrations ({}), DAgger rounds (`{}`), schedule and tokenizer, trained on \
         robot data alone and co-trained on {scenes} vision-language scenes (share {} of each \
         batch). Success / episodes with the 95 % Wilson interval; evaluation seed {EVAL_SEED} \
         (\"both seeds\": with {EVAL_SEED_2}'s scenes). \
         The unseen split's colours and colour–object pairs appear only in the \
         vision-language data.\n",
        args.demos, args.dagger, args.vqa_ratio
    );
    md += "| family | split | robot only | co-trained |\n|---|---|---|---|\n";
    // A row unless every arm's cell is empty.
    let mut row = |family: &str, label: &str, cells: Vec<String>| {
        if cells.iter().any(|c| c != "–") {
            let _ = writeln!(md, "| {family} | {label} | {} |", cells.join(" | "));
        }
    };
    for family in vla_tasks::FAMILIES {
        for (i, split) in ["seen", "unseen"].into_iter().enumerate() {
            // Each arm's reports of this split: first seed, second seed (empty: not run).
            let seeds: Vec<[&[SuiteReport]; 2]> = arms
                .iter()
                .map(|(_, r)| r.splits().by_name()[i].1)
                .collect();
            // Each arm's seeds pooled (the first alone when the second was not run).
            let tallies: Vec<Option<Tally>> =
                seeds.iter().map(|[f, s]| pooled(&[f, s], family)).collect();
            row(
                family,
                split,
                seeds.iter().map(|[f, _]| cell(f, family)).collect(),
            );
            row(
                family,
                &format!("{split}, both seeds"),
                seeds
                    .iter()
                    .zip(&tallies)
                    .map(|([_, second], t)| tally_cell(t.as_ref().filter(|_| !second.is_empty())))
                    .collect(),
            );
            if split != "unseen" {
                continue;
            }
            // The unseen split by what its instructions hold out: vision-language data can
            // teach colours and objects, not phrasings.
            let two = seeds.iter().any(|[_, second]| !second.is_empty());
            for kind in ["color", "combo", "phrasing"] {
                let cells = tallies
                    .iter()
                    .map(|t| tally_cell(t.as_ref().and_then(|t| t.by_held_out.get(kind))))
                    .collect();
                let seeds = if two { ", both seeds" } else { "" };
                row(family, &format!("unseen{seeds}: held-out {kind}"), cells);
            }
        }
    }
    for (label, key) in [
        ("VQA accuracy, seen words", "vqa_accuracy_seen"),
        ("VQA accuracy, held-out words", "vqa_accuracy_held_out"),
    ] {
        let _ = writeln!(
            md,
            "| {label} | held-out scenes | {} | {} |",
            vqa_accuracy(&arms[0].1, key),
            vqa_accuracy(&arms[1].1, key)
        );
    }
    let _ = writeln!(
        md,
        "\nEach arm's own report: [robot only](robot_only/report.md), \
         [co-trained](cotrain/report.md). Total {:.1} min.",
        started.elapsed().as_secs_f64() / 60.0
    );
    let path = args.out.join("ablation.md");
    std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    let json = serde_json::json!({
        "report": path,
        "arms": arms.iter().map(|(name, r)| serde_json::json!({
            "arm": name, "seen": r.seen, "seen_seed_2": r.seen_seed_2,
            "unseen": r.unseen, "unseen_seed_2": r.unseen_seed_2,
            "vqa_accuracy_seen": vqa_accuracy(r, "vqa_accuracy_seen"),
            "vqa_accuracy_held_out": vqa_accuracy(r, "vqa_accuracy_held_out"),
        })).collect::<Vec<_>>(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    super::print_report(args.json, &json, || {
        format!("{md}\nreport: {}", path.display())
    })
}

/// `OUT/policy` is a relative link to the final run (`run`, or the last DAgger round's), so
/// that `vla eval/act/bench/ros --ckpt runs/demo/policy` means "the demo's policy".
fn link_final_policy(out: &Path, run_dir: &Path) -> anyhow::Result<()> {
    let link = out.join("policy");
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link)
            .with_context(|| format!("cannot replace {}", link.display()))?;
    }
    let target = run_dir
        .file_name()
        .with_context(|| format!("{} has no directory name", run_dir.display()))?;
    std::os::unix::fs::symlink(target, &link)
        .with_context(|| format!("cannot link {} to {}", link.display(), run_dir.display()))
}

/// Progress file `vla collect` keeps in a dataset it writes.
const COLLECT_MARKER: &str = ".vla_collect.json";

/// Whether `a` was modified after `b` (false when either is missing).
fn newer(a: &Path, b: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).ok()?.modified().ok();
    matches!((modified(a), modified(b)), (Some(x), Some(y)) if x > y)
}

/// Collects `episodes` episodes of `family` into `dir` unless they are there: expert
/// demonstrations, or with `policy` DAgger episodes driven by that run, the expert taking
/// `expert_share` of the steps (recollected when the run's weights are newer than the data;
/// demonstrations pass 0). Returns the report when it collected.
fn collect_cached(
    args: &Args,
    family: &str,
    episodes: usize,
    dir: &Path,
    seed: u64,
    policy: Option<&Path>,
    expert_share: f64,
) -> anyhow::Result<Option<super::collect::CollectReport>> {
    if let Some(run) = policy {
        if newer(
            &run.join(vla_model::checkpoint::WEIGHTS_FILE),
            &dir.join(COLLECT_MARKER),
        ) {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear stale DAgger data {}", dir.display()))?;
        }
    }
    let settled = std::fs::read_to_string(dir.join(COLLECT_MARKER))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(|v| v.get("episodes").and_then(|e| e.as_u64()) == Some(episodes as u64))
        // Rollouts with another expert share are other data (a marker from before shares
        // were recorded is taken at its word, as it always was).
        .filter(|v| {
            v.get("expert_share")
                .and_then(|e| e.as_f64())
                .is_none_or(|e| e == expert_share)
        })
        .and_then(|v| v.get("settled").and_then(|s| s.as_array()).map(Vec::len));
    let complete = settled == Some(episodes) && vla_datasets::Dataset::open(dir).is_ok();
    if complete {
        tracing::info!("{family}: reusing {episodes} episodes in {}", dir.display());
        return Ok(None);
    }
    let resume = dir.join("meta").exists() && settled.is_some();
    if dir.exists() && !resume {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot clear incomplete {}", dir.display()))?;
    }
    match policy {
        Some(run) => tracing::info!(
            "{family}: {episodes} DAgger episodes driven by {}",
            run.display()
        ),
        None => tracing::info!("{family}: collecting {episodes} expert demonstrations"),
    }
    let report = super::collect::collect(&super::collect::Args {
        run: EpisodeOptions {
            suite: family.to_string(),
            split: "seen".into(),
            episodes,
            seed,
            envs: args.envs,
            // The policy's own mistakes are the perturbation in DAgger.
            noise: if policy.is_some() { 0.0 } else { args.noise },
            push: if policy.is_some() { 0.0 } else { args.push },
            language: Default::default(),
        },
        out: dir.to_path_buf(),
        keep_failures: false,
        resume,
        policy: policy.map(Path::to_path_buf),
        expert_share,
        shard: None,
        video: None,
        device: args.device.clone(),
        json: false,
        sim: args.sim.clone(),
    })?;
    anyhow::ensure!(
        !report.interrupted,
        "collection of {family} was interrupted"
    );
    tracing::info!(
        "{family}: {} episodes, {} frames ({:.0} frames/s)",
        report.total_episodes,
        report.total_frames,
        report.frames_per_s
    );
    Ok(Some(report))
}

/// Renders `scenes` vision-language scenes into `dir` unless a dataset of that many is
/// there already.
fn vqa_cached(args: &Args, dir: &Path, scenes: usize) -> anyhow::Result<()> {
    if let Ok(summary) = vla_datasets::vqa::summary(dir) {
        if summary.scenes == scenes {
            tracing::info!("vqa: reusing {scenes} scenes in {}", dir.display());
            return Ok(());
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot clear incomplete {}", dir.display()))?;
    }
    tracing::info!("vqa: rendering {scenes} vision-language scenes");
    let report = super::vqa::collect_dataset(&super::vqa::CollectArgs {
        out: dir.to_path_buf(),
        scenes,
        seed: VQA_SEED,
        questions_per_scene: 6,
        json: false,
        sim: args.sim.clone(),
        language: Default::default(),
    })?;
    tracing::info!(
        "vqa: {} questions about {} scenes in {:.0} s",
        report.rows,
        report.scenes,
        report.seconds
    );
    Ok(())
}

/// `vla train` arguments for a demo run: from scratch, or fine-tuned from `init`.
fn training(
    args: &Args,
    data: &[PathBuf],
    out: &Path,
    steps: Option<usize>,
    lr: Option<f64>,
    init: Option<&Path>,
    vqa: Option<&VqaUse>,
) -> super::train::Args {
    super::train::Args {
        vqa: vqa.filter(|v| v.cotrain).map(|v| v.dir.clone()),
        vqa_ratio: args.vqa_ratio,
        vqa_words: vqa.filter(|v| !v.cotrain).map(|v| v.dir.clone()),
        data: data.to_vec(),
        out: out.to_path_buf(),
        config: args.config.clone(),
        steps,
        batch_size: None,
        lr,
        seed: None,
        device: args.device.clone(),
        resume: false,
        init: init.map(Path::to_path_buf),
        init_lm: None,
        threads: None,
        until: None,
        nproc: 1,
        dist_backend: None,
        dist_timeout: 600,
        cameras: Vec::new(),
        action_space: None,
        gripper_dim: None,
        json: false,
    }
}

/// Trains unless the run already reached its step count; resumes an unfinished run.
fn train_cached(mut args: super::train::Args) -> anyhow::Result<serde_json::Value> {
    let (model_cfg, cfg) = vla_model::train::load_config_file(&args.config)?;
    let steps = args.steps.unwrap_or(cfg.steps);
    let summary_path = args.out.join("train_summary.json");
    // A run trained with another model config (the config file changed since) is stale.
    let trained_with = vla_model::RunConfig::load(args.out.join("config.json")).ok();
    if trained_with.is_some_and(|run| !model_cfg.trained_as(&run.config)) {
        tracing::warn!(
            "{} was trained with another model config than {}: training again",
            args.out.display(),
            args.config.display()
        );
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("cannot clear the stale run {}", args.out.display()))?;
    }
    if let Some((step, _)) = vla_model::train::latest_checkpoint(&args.out)? {
        if step >= steps {
            if let Some(v) = std::fs::read_to_string(&summary_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
            {
                tracing::info!(
                    "reusing the trained run in {} ({step} steps)",
                    args.out.display()
                );
                return Ok(v);
            }
        }
        args.resume = true;
    }
    let summary = super::train::train(&args)?;
    anyhow::ensure!(
        !summary.interrupted,
        "training was interrupted (rerun to resume)"
    );
    let value = serde_json::to_value(&summary)?;
    std::fs::write(&summary_path, serde_json::to_string_pretty(&value)?)
        .with_context(|| format!("cannot write {}", summary_path.display()))?;
    Ok(value)
}

/// Evaluates one family on one split unless a report newer than the weights exists. The
/// first seed's reports and GIFs go to `RUN/eval`, another seed's (without GIFs) to
/// `RUN/eval/seed{seed}`.
fn eval_cached(
    args: &Args,
    run_dir: &Path,
    family: &str,
    split: &str,
    episodes: usize,
    seed: u64,
) -> anyhow::Result<SuiteReport> {
    let first = seed == EVAL_SEED;
    let out_dir = match first {
        true => run_dir.join("eval"),
        false => run_dir.join("eval").join(format!("seed{seed}")),
    };
    let path = out_dir.join(format!("{family}_{split}.json"));
    let weights = run_dir.join(vla_model::checkpoint::WEIGHTS_FILE);
    let fresh = |p: &Path| -> Option<bool> {
        Some(
            std::fs::metadata(p).ok()?.modified().ok()?
                >= std::fs::metadata(&weights).ok()?.modified().ok()?,
        )
    };
    if fresh(&path) == Some(true) {
        if let Some(r) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<SuiteReport>(&t).ok())
            .filter(|r| r.episodes == episodes)
        {
            tracing::info!("reusing {}", path.display());
            return Ok(r);
        }
    }
    tracing::info!("evaluating {family} / {split}: {episodes} episodes, seed {seed}");
    super::eval::evaluate(&super::eval::Args {
        ckpt: run_dir.to_path_buf(),
        run: EpisodeOptions {
            suite: family.to_string(),
            split: split.into(),
            episodes,
            seed,
            envs: args.envs,
            noise: 0.0,
            push: 0.0,
            language: Default::default(),
        },
        gifs: usize::from(first),
        out: (!first).then_some(out_dir),
        trace: None,
        shard: None,
        merge_shards: false,
        dist_timeout: 3600,
        temperature: 0.0,
        device: args.device.clone(),
        threads: None,
        json: false,
        sim: args.sim.clone(),
    })
}

fn cell(reports: &[SuiteReport], family: &str) -> String {
    tally_cell(reports.iter().find_map(|r| r.per_family.get(family)))
}

/// A family's success over the reports of several seeds together (`None` when no report
/// has the family).
fn pooled(reports: &[&[SuiteReport]], family: &str) -> Option<Tally> {
    let tallies: Vec<&Tally> = reports
        .iter()
        .filter_map(|r| r.iter().find_map(|r| r.per_family.get(family)))
        .collect();
    (!tallies.is_empty()).then(|| Tally::pooled(tallies))
}

fn tally_cell(tally: Option<&Tally>) -> String {
    tally
        .map(|t| {
            let mut c = format!(
                "{}/{} = {:.0} % [{:.0}–{:.0}]",
                t.successes,
                t.episodes,
                100.0 * t.success_rate,
                100.0 * t.wilson95[0],
                100.0 * t.wilson95[1]
            );
            // Multi-step families: how much got done, which shows before full success does.
            if t.has_partial_progress() {
                let _ = write!(c, "; {:.0} % of blocks", 100.0 * t.mean_progress);
            }
            c
        })
        .unwrap_or_else(|| "–".into())
}

/// Success per family: each split on the first seed's scenes, and where it has a second
/// seed's too, on those and both pooled.
fn success_table(splits: &Splits) -> String {
    let any_second = splits.by_name().iter().any(|(_, [_, b])| !b.is_empty());
    let mut headers = vec!["family".to_string()];
    for (name, [_, second]) in splits.by_name() {
        if second.is_empty() {
            headers.push(match any_second {
                true => format!("{name}, seed {EVAL_SEED}"),
                false => name.to_string(),
            });
        } else {
            headers.push(format!("{name}, seed {EVAL_SEED}"));
            headers.push(format!("{name}, seed {EVAL_SEED_2}"));
            headers.push(format!("{name}, both seeds"));
        }
    }
    let mut s = format!(
        "| {} |\n|{}\n",
        headers.join(" | "),
        "---|".repeat(headers.len())
    );
    for family in vla_tasks::FAMILIES {
        let mut cells = vec![family.to_string()];
        for (_, [first, second]) in splits.by_name() {
            cells.push(cell(first, family));
            if !second.is_empty() {
                cells.push(cell(second, family));
                cells.push(tally_cell(pooled(&[first, second], family).as_ref()));
            }
        }
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}

fn report_markdown(
    args: &Args,
    out: &Path,
    report: &DemoReport,
    demos: &[(String, usize)],
) -> String {
    let run_dir = &report.run;
    let (train, rounds, times) = (&report.train, &report.dagger, &report.seconds);
    // Links are relative to the report, which sits in OUT.
    let rel = |p: &Path| {
        p.strip_prefix(out)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let mut md = String::from("# VLA demo report\n\n");
    let _ = writeln!(
        md,
        "Closed-loop success of the tiny VLA trained from scratch on expert demonstrations{} \
         (success / episodes, 95 % Wilson interval in brackets), run `{}`. Evaluation scenes \
         use seed {EVAL_SEED} (second columns: seed {EVAL_SEED_2}), disjoint from the \
         demonstrations (seed {COLLECT_SEED}); the \
         unseen split has colours, object/colour combinations and instruction templates never \
         in training.\n",
        if rounds.is_empty() {
            String::new()
        } else {
            format!(" and {} DAgger round(s)", rounds.len())
        },
        rel(run_dir)
    );
    md += &success_table(&report.splits());
    let get = |k: &str| train.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let _ = writeln!(
        md,
        "\n## Training\n\n- demonstrations: {} (expert noise σ = {} m/step)\n- data: {}\n- parameters: {}\n- steps: {}, {:.1} samples/s\n- final validation: {}\n- config: `{}`\n",
        demos
            .iter()
            .map(|(f, n)| format!("{f} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        args.noise,
        get("data"),
        get("params"),
        get("steps"),
        get("samples_per_s").as_f64().unwrap_or(f64::NAN),
        get("final_val"),
        args.config.display()
    );
    if let Some(dir) = &report.cotrain {
        let _ = writeln!(
            md,
            "Co-trained (RT-2) on the vision-language scenes in `{}`, {} of each batch; the \
             final validation's question-answering accuracy is in the runs' `train.json` \
             and `metrics.jsonl`.\n",
            rel(dir),
            args.vqa_ratio
        );
    }
    if out.join("run").join("loss.png").exists() {
        md += "![loss curve](run/loss.png)\n\n";
    }
    if !rounds.is_empty() {
        md += "## DAgger\n\nThe trained policy drives (the expert's action runs instead at a \
               share of the steps, β), the expert labels every state reached, and the model is \
               fine-tuned from the previous round on the demonstrations and all DAgger data.\n\n\
               | round | rollouts (episodes, frames, success of the mixed rollouts) | fine-tuning |\n\
               |---|---|---|\n";
        for r in rounds {
            let collected: Vec<String> = r
                .collected
                .iter()
                .map(|c| {
                    format!(
                        "{} {} episodes (β = {}), {} frames, {:.0} %",
                        c["family"].as_str().unwrap_or("?"),
                        c["episodes"],
                        c["expert_share"]
                            .as_f64()
                            .map_or("?".to_string(), |b| b.to_string()),
                        c["frames"],
                        100.0 * c["success_rate"].as_f64().unwrap_or(f64::NAN)
                    )
                })
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} steps; validation L1 {:.4}, token accuracy {:.2} |",
                r.round,
                collected.join("; "),
                r.train.get("steps").cloned().unwrap_or_default(),
                r.train["final_val"]["l1"].as_f64().unwrap_or(f64::NAN),
                r.train["final_val"]["accuracy"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
        }
        md += "\n";
    }
    let _ = writeln!(
        md,
        "## Time\n\ncollect {:.0} s, train {:.0} s, DAgger {:.0} s, evaluate {:.0} s; total {:.1} min{}.\n",
        times.collect_s,
        times.train_s,
        times.dagger_s,
        times.eval_s,
        times.total_s / 60.0,
        if times.reused {
            " (stages reused from the cache are counted at the time they took when they ran)"
        } else {
            ""
        }
    );
    md += "## Rollouts (front | wrist camera)\n\n";
    for split in ["seen", "unseen"] {
        let dir = run_dir.join("eval").join(split);
        let mut gifs: Vec<String> = std::fs::read_dir(&dir)
            .map(|it| {
                it.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".gif"))
                    .collect()
            })
            .unwrap_or_default();
        gifs.sort();
        for g in gifs {
            let _ = writeln!(md, "![{split} {g}]({}/eval/{split}/{g})", rel(run_dir));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use vla_tasks::language::Split;
    use vla_tasks::runner::wilson_interval;

    fn report(family: &str, successes: usize, episodes: usize) -> SuiteReport {
        let mut per_family = std::collections::BTreeMap::new();
        let mut t = Tally {
            episodes,
            successes,
            success_rate: successes as f64 / episodes as f64,
            wilson95: wilson_interval(successes, episodes, 1.959_964),
            mean_progress: successes as f64 / episodes as f64,
            progress_counts: Default::default(),
            ..Default::default()
        };
        t.progress_counts.insert("1.00".into(), successes);
        t.progress_counts
            .insert("0.00".into(), episodes - successes);
        per_family.insert(family.to_string(), t);
        SuiteReport {
            suite: family.into(),
            split: Split::Seen,
            episodes,
            successes,
            success_rate: successes as f64 / episodes as f64,
            per_family,
            digest: String::new(),
        }
    }

    /// A round names each family's expert share or takes `--expert-share`'s; a share outside
    /// [0, 1], a stray `@` or a malformed count is refused with the item named.
    #[test]
    fn a_dagger_round_gives_each_family_its_expert_share() {
        let round = parse_round("pick=100, stack=60@0.6", 0.3).expect("a round");
        let spec = |family: &str, episodes, expert_share| DaggerSpec {
            family: family.into(),
            episodes,
            expert_share,
        };
        assert_eq!(round, [spec("pick", 100, 0.3), spec("stack", 60, 0.6)]);
        for (bad, says) in [
            ("stack=60@1.5", "must be in [0, 1]"),
            ("stack=60@high", "is not an expert share"),
            ("stack@0.5", "is not family=episodes"),
            ("stack=6o@0.5", "is not a number of episodes"),
            ("stock=60@0.5", "stock"),
        ] {
            let err = format!("{:#}", parse_round(bad, 0.3).expect_err(bad));
            assert!(
                err.contains(says) && err.contains("--dagger"),
                "{bad}: {err}"
            );
        }
    }

    /// Two seeds pool into one tally (their sums, the Wilson interval of all the episodes),
    /// shown beside each seed's own; a family one seed lacks pools the other's alone.
    #[test]
    fn the_second_seed_is_reported_and_pooled() {
        let seen = [report("pick", 42, 50), report("place", 29, 40)];
        let seen_2 = [report("pick", 37, 40)];
        let place = pooled(&[&seen, &seen_2], "place").expect("place");
        assert_eq!((place.successes, place.episodes), (29, 40));
        let pick = pooled(&[&seen, &seen_2], "pick").expect("pick");
        assert_eq!((pick.successes, pick.episodes), (79, 90));
        assert_eq!(pick.wilson95, wilson_interval(79, 90, 1.959_964));
        assert!((pick.mean_progress - 79.0 / 90.0).abs() < 1e-12);
        assert_eq!(pick.progress_counts["0.00"], 11);
        assert!(pooled(&[&seen, &seen_2], "sort").is_none());
        let splits = |seen_2, unseen, unseen_2| Splits {
            seen: [&seen[..], seen_2],
            unseen: [unseen, unseen_2],
        };
        let table = success_table(&splits(&seen_2, &[], &[]));
        assert!(table.starts_with("| family | seen, seed 1000 | seen, seed 2000 | seen, both seeds | unseen, seed 1000 |"), "{table}");
        let pick_row = table
            .lines()
            .find(|l| l.starts_with("| pick |"))
            .expect("a pick row");
        assert!(pick_row.contains("| 37/40 = 92 % [80–97] |"), "{pick_row}");
        assert!(pick_row.contains("| 79/90 = 88 % [79–93] |"), "{pick_row}");
        // Without a second seed the table is the one-seed table it always was.
        assert!(success_table(&splits(&[], &[], &[])).starts_with("| family | seen | unseen |"));
        // The unseen split's second seed gets its own columns and pool, in the same order.
        let unseen = [report("pick", 21, 40)];
        let unseen_2 = [report("pick", 26, 40)];
        let table = success_table(&splits(&[], &unseen, &unseen_2));
        assert!(table.starts_with("| family | seen, seed 1000 | unseen, seed 1000 | unseen, seed 2000 | unseen, both seeds |"), "{table}");
        let pick_row = table
            .lines()
            .find(|l| l.starts_with("| pick |"))
            .expect("a pick row");
        assert!(
            pick_row.ends_with(
                "| 21/40 = 52 % [37–67] | 26/40 = 65 % [50–78] | 47/80 = 59 % [48–69] |"
            ),
            "{pick_row}"
        );
    }
}
