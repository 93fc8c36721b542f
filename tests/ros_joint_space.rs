//! A joint-space policy over ROS 2 (RustDDS, in its own network namespace): a checkpoint
//! trained on a dataset whose state and action are the arm's six joint positions and whose
//! camera has its own name drives `vla ros sim` through `vla ros bridge` with
//! `output.motion = joint_trajectory`: the bridge reads the camera from `control.cameras`
//! and the state from `/joint_states` by name, and every command the simulator executes is
//! a joint trajectory within the safety chain's joint limits (none rejected).

mod common;
mod ros_common;

use std::path::Path;

use ros_common::*;
use vla_datasets::{CameraSpec, DatasetSpec, DatasetWriter, ImageSize, RawFrameRecord};
use vla_ros_bridge::netns;

const TEST: &str = "a_joint_space_policy_drives_the_simulator_through_joint_trajectories";

const TOY_CONFIG: &str = concat!(
    common::toy_model!(),
    r#"
[train]
steps = 3
batch_size = 4
val_every = 3
log_every = 1
checkpoint_every = 3
"#
);

/// Two short episodes of the built-in arm in joint space: one 64×48 camera named `laptop`,
/// the six URDF joints (LeRobot's `NAME.pos`) as state and as action.
fn write_dataset(dir: &Path, joints: &[String]) {
    let names: Vec<String> = joints.iter().map(|j| format!("{j}.pos")).collect();
    let spec = DatasetSpec::with_features(
        "vla_arm",
        10,
        vec![CameraSpec::new(
            "laptop",
            ImageSize {
                width: 64,
                height: 48,
            },
        )],
        names.clone(),
        names,
    );
    let mut w = DatasetWriter::create(dir, spec).expect("create");
    let home = [0.0f32, 0.5, 1.6, 0.0, 1.04, 0.0];
    for episode in 0..2 {
        for t in 0..6 {
            let img = image::RgbImage::from_fn(64, 48, |x, y| {
                image::Rgb([(x * 4) as u8, (y * 5) as u8, (t * 40 + episode * 10) as u8])
            });
            let state: Vec<f32> = home.iter().map(|q| q + 0.01 * t as f32).collect();
            let action: Vec<f32> = state.iter().map(|q| q + 0.01).collect();
            w.add_raw_frame(RawFrameRecord {
                images: &[("laptop", &img)],
                state: &state,
                action: &action,
                timestamp: t as f32 / 10.0,
                subtask: None,
            })
            .expect("frame");
        }
        w.save_episode("pick up the red cube").expect("save");
    }
    w.finalize().expect("finalize");
}

#[test]
fn a_joint_space_policy_drives_the_simulator_through_joint_trajectories() {
    if let Err(why) = netns::available() {
        return netns::skip_or_fail(TEST, &why);
    }
    let dir = temp_dir("joint-space");
    let robot = vla_sim::RobotDescription::default_arm().expect("arm");
    let joints: Vec<String> = robot.chain.joints.iter().map(|j| j.name.clone()).collect();
    let data = dir.join("data");
    write_dataset(&data, &joints);
    let config = dir.join("toy.toml");
    std::fs::write(&config, TOY_CONFIG).expect("config");
    let run = dir.join("run");
    let path = |p: &Path| p.display().to_string();
    let trained = common::json(&[
        "train",
        "--data",
        &path(&data),
        "--out",
        &path(&run),
        "--config",
        &path(&config),
        "--json",
    ]);
    assert_eq!(trained["steps"], 3, "{trained}");

    let vla = env!("CARGO_BIN_EXE_vla");
    // The simulator's front camera plays the policy's laptop camera.
    let script = format!(
        "{vla} ros sim --suite pick --seed 3 --episodes 1 --lockstep --json \
           > {dir}/sim.json 2> {dir}/sim.log & S=$!; \
         {vla} ros bridge --ckpt {ckpt} --json --set output.motion=joint_trajectory \
           --set 'control.cameras=[\"laptop=/camera/front/image_raw\"]' \
           --set control.require_new_frames=true --set control.model_deadline_s=5 \
           --set control.watchdog_timeout_s=10 \
           > {dir}/bridge.json 2> {dir}/bridge.log & B=$!; \
         wait $S; R=$?; STOP_B; wait $B; BR=$?; kill $K 2>/dev/null; \
         [ $R -eq 0 ] && [ $BR -eq 0 ]",
        vla = sh_quote(vla),
        ckpt = sh_quote(&path(&run)),
        dir = sh_quote(&path(&dir)),
    );
    let script = script.replace(
        "STOP_B;",
        // Ctrl-C until it is gone: a background job may not have its handler installed yet.
        "( while kill -INT $B 2>/dev/null; do sleep 0.5; done ) & K=$!;",
    );
    let status = netns::shell(&script).status().expect("runs the namespace");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    if !status.success() {
        eprintln!(
            "--- sim log ---\n{}\n--- bridge log ---\n{}",
            read("sim.log"),
            read("bridge.log")
        );
    }
    assert!(status.success(), "ros sim + bridge failed ({status})");
    let sim: serde_json::Value = serde_json::from_str(&read("sim.json")).expect("sim JSON");
    let bridge: serde_json::Value =
        serde_json::from_str(&read("bridge.json")).expect("bridge JSON");
    eprintln!("sim: {sim}\nbridge: {bridge}");
    let steps = sim["per_episode"][0]["steps"].as_u64().expect("steps");
    let received = sim["commands_received"].as_u64().expect("commands");
    assert!(steps > 0, "{sim}");
    assert!(
        received >= steps,
        "every step executed a command from the bridge: {sim}"
    );
    assert_eq!(sim["commands_rejected"], 0, "{sim}");
    assert!(
        bridge["inferences"].as_u64().unwrap_or(0) >= steps,
        "{bridge}"
    );
    assert!(
        bridge["frames_in"]["laptop"].as_u64().unwrap_or(0) >= steps,
        "{bridge}"
    );
    assert_eq!(bridge["model_errors"], 0, "{bridge}");
    assert_eq!(bridge["joint_states_rejected"], 0, "{bridge}");
    let _ = std::fs::remove_dir_all(&dir);
}
