//! Write a small synthetic LeRobot v3.0 dataset: `cargo run -p vla-datasets --example
//! write_sample -- DIR [EPISODES]`. Useful to inspect the format or to feed Python lerobot.

use image::{Rgb, RgbImage};
use vla_core::{Action, Observation, STATE_DIM};
use vla_datasets::{validate, DatasetSpec, DatasetWriter, FrameRecord, ImageSize};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: write_sample DIR [EPISODES]")?;
    let episodes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let (w, h) = (64, 48);
    let mut writer = DatasetWriter::create(
        &dir,
        DatasetSpec::new(
            "sample_arm",
            10,
            ImageSize {
                width: w,
                height: h,
            },
        ),
    )?;
    let tasks = ["pick up the red cube", "open the drawer"];
    for ep in 0..episodes {
        let task = tasks[ep % tasks.len()];
        for t in 0..(8 + ep) {
            let img = |cam: u8| {
                RgbImage::from_fn(w, h, |x, y| {
                    Rgb([
                        (x * 4) as u8,
                        (y * 5) as u8,
                        (t as u8)
                            .wrapping_mul(20)
                            .wrapping_add(cam.wrapping_mul(90)),
                    ])
                })
            };
            let obs = Observation {
                front: img(0),
                wrist: img(1),
                front_depth: None,
                state: std::array::from_fn::<f32, STATE_DIM, _>(|k| {
                    (ep * 100 + t) as f32 + k as f32
                }),
                instruction: task.to_string(),
            };
            writer.add_frame(FrameRecord {
                observation: &obs,
                action: Action([0.01 * t as f32, 0.0, -0.01, 0.0, 0.0, 0.1, (t % 2) as f32]),
                timestamp: t as f32 / 10.0,
                subtask: None,
            })?;
        }
        writer.save_episode(task)?;
    }
    writer.finalize()?;
    let report = validate(&dir)?;
    println!("{report:?}");
    Ok(())
}
