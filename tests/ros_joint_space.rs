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

#[test]
fn a_joint_space_policy_drives_the_simulator_through_joint_trajectories() {
    if let Err(why) = netns::available() {
        return netns::skip_or_fail(TEST, &why);
    }
    let dir = temp_dir("joint-space");
    let robot = vla_sim::RobotDescription::default_arm().expect("arm");
    let joints: Vec<String> = robot.chain.joints.iter().map(|j| j.name.clone()).collect();
    // Two short episodes of the arm in joint space: one 64×48 camera named `laptop`, the six
    // URDF joints (LeRobot's `NAME.pos`) as state and as action.
    let data = dir.join("data");
    let names: Vec<String> = joints.iter().map(|j| format!("{j}.pos")).collect();
    let home = [0.0f32, 0.5, 1.6, 0.0, 1.04, 0.0];
    common::write_joint_dataset(&data, ("laptop", 64, 48), &names, &home, 2, 6);
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

    // The simulator's front camera plays the policy's laptop camera.
    let (sim, bridge) = sim_and_bridge(
        &dir,
        "--suite pick --seed 3 --episodes 1 --lockstep",
        &format!(
            "--ckpt {} --set output.motion=joint_trajectory \
             --set 'control.cameras=[\"laptop=/camera/front/image_raw\"]' \
             --set control.require_new_frames=true --set control.model_deadline_s=5 \
             --set control.watchdog_timeout_s=10",
            sh_quote(&path(&run))
        ),
    );
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
