//! `vla`: one command line for the whole stack. Every report prints one JSON object on
//! stdout with `--json`; logs go to stderr through `tracing`.

mod commands;
mod plot;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vla",
    version,
    about = "Vision-language-action robot stack: simulate, collect, train, act, evaluate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List task families, splits and example instructions.
    Tasks(commands::tasks::Args),
    /// Run the scripted experts and report success per family.
    Expert(commands::expert::Args),
    /// Record expert demonstrations into a LeRobot v3.0 dataset.
    Collect(commands::collect::Args),
    /// Inspect, validate or export LeRobot v3.0 datasets.
    Dataset {
        #[command(subcommand)]
        what: commands::dataset::What,
    },
    /// Render one camera image of a task's first frame to PNG.
    Render(commands::render::Args),
    /// Train a VLA policy on LeRobot datasets.
    Train(commands::train::Args),
    /// One action from a trained policy for an image and an instruction.
    Act(commands::act::Args),
    /// A trained model's answer to a question about images (what co-training taught it).
    Ask(commands::ask::Args),
    /// Greedy continuation of a prompt by a pretrained language model directory.
    Generate(commands::generate::Args),
    /// Closed-loop success of a trained policy on the task suite.
    Eval(commands::eval::Args),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: commands::bench::What,
    },
    /// Interactive viewer of the cell running the expert (R: reset, N: next episode).
    View(commands::view::Args),
    /// The main job on a fresh machine: run the experts and write rollout GIFs and a report.
    Demo(commands::demo::Args),
    /// ROS 2: the policy bridge node and the simulator as a ROS 2 robot.
    Ros {
        #[command(subcommand)]
        what: commands::ros::What,
    },
    /// Import a llama.cpp GGUF language model as a Hugging Face model directory.
    ImportLm(commands::import_lm::Args),
    /// LoRA runs: merge adapters into their base weights.
    Lora {
        #[command(subcommand)]
        what: commands::lora::What,
    },
    /// Vision-language data: question/answer pairs rendered from the simulator.
    Vqa {
        #[command(subcommand)]
        what: commands::vqa::What,
    },
}

fn main() {
    // RustDDS warns once per UDP datagram over a size threshold, i.e. for every fragment of
    // every camera frame (hundreds per second): silenced, as writing them costs latency.
    // bevy's "software rendering … very slow" warning is left to vla-render, which says once
    // whether a CPU rasteriser is expected here or a GPU was missed (and how to fix that).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,wgpu=error,naga=warn,bevy=warn,bevy_render::renderer=error,rustdds=warn,rustdds::network::udp_sender=error,ros2_client=warn",
                )
            }),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tasks(a) => commands::tasks::run(a),
        Command::Expert(a) => commands::expert::run(a),
        Command::Collect(a) => commands::collect::run(a),
        Command::Dataset { what } => commands::dataset::run(what),
        Command::Render(a) => commands::render::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Act(a) => commands::act::run(a),
        Command::Ask(a) => commands::ask::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Bench { what } => commands::bench::run(what),
        Command::View(a) => commands::view::run(a),
        Command::Demo(a) => commands::demo::run(a),
        Command::Ros { what } => commands::ros::run(what),
        Command::ImportLm(a) => commands::import_lm::run(a),
        Command::Lora { what } => commands::lora::run(what),
        Command::Vqa { what } => commands::vqa::run(what),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
