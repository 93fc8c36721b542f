//! Validate a LeRobot v3.0 dataset and print a summary and one frame:
//! `cargo run -p vla-datasets --example inspect -- DIR [FRAME]`.

use vla_datasets::{validate, Dataset};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: inspect DIR [FRAME]")?;
    let frame: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0);
    let report = validate(&dir)?;
    println!("{report:?}");
    let ds = Dataset::open(&dir)?;
    println!(
        "fps {} frames {} episodes {} tasks {:?} cameras {:?}",
        ds.fps(),
        ds.len(),
        ds.episodes().len(),
        ds.tasks(),
        ds.image_keys()
    );
    let f = ds.frame(frame)?;
    println!(
        "frame {}: episode {} frame_index {} t={} task {:?}\n  state {:?}\n  action {:?}",
        f.index, f.episode_index, f.frame_index, f.timestamp, f.task, f.state, f.action
    );
    for (key, img) in &f.images {
        println!(
            "  {key}: {}x{} pixel(0,0)={:?}",
            img.width(),
            img.height(),
            img.get_pixel(0, 0).0
        );
    }
    if let Some(stats) = ds.stats() {
        for (key, s) in &stats.features {
            println!(
                "  stats {key}: shape {:?} count {} mean[0] {:?} q01 {}",
                s.shape,
                s.count,
                s.mean.first(),
                s.q01().is_some()
            );
        }
    }
    Ok(())
}
