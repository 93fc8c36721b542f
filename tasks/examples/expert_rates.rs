//! Runs the scripted experts without rendering and prints success per family.
use vla_sim::{EnvConfig, RobotDescription};
use vla_tasks::runner::{episode_specs, run, Event, ExpertAgent, RunSetup, SuiteReport};
use vla_tasks::{parse_suite, Language, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let suite = args.get(1).map(|s| s.as_str()).unwrap_or("all");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let split: Split = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(Split::Seen);
    let families = parse_suite(suite)?;
    let config = EnvConfig {
        render_enabled: false,
        ..Default::default()
    };
    let specs = episode_specs(&families, split, n, 7);
    let lang = Language::builtin()?;
    let outcomes = run(
        &specs,
        &RunSetup {
            envs: 2,
            config: &config,
            robot: &RobotDescription::default_arm()?,
            language: &lang,
            noise: vla_tasks::ExpertNoise::NONE,
        },
        &mut ExpertAgent,
        &mut |e| {
            if let Event::Done { outcome, .. } = e {
                if !outcome.success {
                    println!(
                        "FAIL {} seed {} '{}' steps {}",
                        outcome.spec.family, outcome.spec.seed, outcome.instruction, outcome.steps
                    );
                }
            }
            true
        },
    )?;
    println!(
        "{}",
        serde_json::to_string_pretty(&SuiteReport::from_outcomes(suite, split, &outcomes))?
    );
    Ok(())
}
