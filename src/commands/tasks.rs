//! `vla tasks`: the suite at a glance.

use std::collections::BTreeMap;

use rand::SeedableRng;
use serde::Serialize;
use vla_sim::{Cell, RobotDescription, SimConfig};
use vla_tasks::{make_task, Split, FAMILIES};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// Example instructions per family and split.
    #[arg(long, default_value_t = 3)]
    examples: usize,
    #[command(flatten)]
    language: super::LanguageOptions,
}

#[derive(Serialize)]
struct FamilyInfo {
    max_steps: usize,
    examples: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize)]
struct Report {
    families: BTreeMap<String, FamilyInfo>,
    splits: Vec<&'static str>,
    held_out: vla_tasks::language::HeldOut,
    colors: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let lang = args.language.language()?;
    let robot = RobotDescription::default_arm()?;
    let mut families = BTreeMap::new();
    for family in FAMILIES {
        let mut examples = BTreeMap::new();
        let mut max_steps = 0;
        for split in Split::ALL {
            let mut list = Vec::new();
            for i in 0..args.examples {
                let mut task = make_task(family, split, &lang, 0.0, 0)?;
                max_steps = task.max_steps();
                let mut cell = Cell::new(SimConfig::default(), robot.clone())?;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
                list.push(task.reset(&mut cell, &mut rng)?);
            }
            examples.insert(split.as_str().to_string(), list);
        }
        families.insert(
            family.to_string(),
            FamilyInfo {
                max_steps,
                examples,
            },
        );
    }
    let report = Report {
        families,
        splits: vec!["seen", "unseen"],
        held_out: lang.splits.unseen.clone(),
        colors: lang.all_colors(),
    };
    super::print_report(args.json, &report, || {
        let mut s = String::new();
        for (name, f) in &report.families {
            s += &format!("{name} (max {} steps)\n", f.max_steps);
            for (split, ex) in &f.examples {
                for e in ex {
                    s += &format!("  [{split}] {e}\n");
                }
            }
        }
        s
    })
}
